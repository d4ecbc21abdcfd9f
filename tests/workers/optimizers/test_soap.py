"""SOAP (Levanter's blocked variant): a float64 oracle written from the reference math, reductions and invariants.

The oracle below is written from Levanter's scale_by_soap (OPTIMIZERS.md 3.10): init-only first step, m in the
original basis, v in the rotated basis, bias corrections with the count t, power iteration + QR with the factors
from before the current gradient and exp_avg_sq re-sorted. Square matrices keep every eigenvalue distinct, so
eigenbases are unique up to column signs (which the update does not depend on).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from workers.model import SCALES, ModelConfig, build_model
from workers.optimizers import build, get_spec, resolve_hparams
from workers.optimizers.soap import SOAP, eigh_descending


def grad_stream(shape: tuple[int, ...], steps: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(steps)]


def soap_oracle(
    w0: torch.Tensor,
    grads: list[torch.Tensor],
    *,
    lr: float,
    b1: float,
    b2: float,
    b_sh: float,
    eps: float,
    freq: int,
    wd: float,
) -> list[torch.Tensor]:
    """Levanter's SOAP on one unblocked matrix in float64; returns the parameter after every step."""
    w = w0.clone()
    out = []
    L = R = QL = QR = m = v = torch.zeros(())
    for t, g in enumerate(grads, start=1):
        if t == 1:
            L, R = (1 - b_sh) * g @ g.T, (1 - b_sh) * g.T @ g
            QL = torch.linalg.eigh(L + eps * torch.eye(L.shape[0]))[1].flip(-1)
            QR = torch.linalg.eigh(R + eps * torch.eye(R.shape[0]))[1].flip(-1)
            m, v = torch.zeros_like(g), torch.zeros_like(g)
            w = w - lr * wd * w  # zero update, decay still applied
            out.append(w.clone())
            continue
        m = b1 * m + (1 - b1) * g
        g_rot = QL.T @ g @ QR
        v = b2 * v + (1 - b2) * g_rot**2
        u = QL @ ((QL.T @ m @ QR) / (v.sqrt() + eps)) @ QR.T * (1 - b2**t) ** 0.5 / (1 - b1**t)
        if t % freq == 0:
            est = torch.diag(QL.T @ L @ QL)
            order = torch.argsort(est, descending=True)
            v, QL = v[order, :], QL[:, order]
            QL = torch.linalg.qr(L @ QL)[0]
            est = torch.diag(QR.T @ R @ QR)
            order = torch.argsort(est, descending=True)
            v, QR = v[:, order], QR[:, order]
            QR = torch.linalg.qr(R @ QR)[0]
        L = b_sh * L + (1 - b_sh) * g @ g.T
        R = b_sh * R + (1 - b_sh) * g.T @ g
        w = w - lr * (u + wd * w)
        out.append(w.clone())
    return out


def run_soap(params: list[torch.Tensor], grads: list[list[torch.Tensor]], **kwargs: object) -> list[list[torch.Tensor]]:
    """Step SOAP over `params` with the given per-step gradients; returns the params after every step."""
    return run_soap_opt(SOAP(params, **kwargs), params, grads)  # type: ignore[arg-type]


def run_soap_opt(opt: SOAP, params: list[torch.Tensor], grads: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    history = []
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone().to(p.dtype)
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history


HP = dict(lr=0.05, b1=0.9, b2=0.95, b_sh=0.9, eps=1e-8, freq=3, wd=0.1)


def soap_kwargs(hp: dict[str, float], **extra: object) -> dict[str, object]:
    return dict(
        lr=hp["lr"],
        betas=(hp["b1"], hp["b2"]),
        shampoo_beta=hp["b_sh"],
        eps=hp["eps"],
        precondition_frequency=int(hp["freq"]),
        weight_decay=hp["wd"],
        **extra,
    )


def test_matches_float64_oracle_over_twelve_steps() -> None:
    w0 = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads = grad_stream((5, 5), 12, seed=2)
    expected = soap_oracle(w0, grads, **HP)  # type: ignore[arg-type]
    p = w0.clone().requires_grad_()
    got = run_soap([p], [[g] for g in grads], **soap_kwargs(HP))
    for t, (e, (g,)) in enumerate(zip(expected, got, strict=True), start=1):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10, msg=f"step {t}")
    assert not torch.equal(got[-1][0], got[-2][0])  # it really moves


def test_blocks_are_independent_soaps_including_remainders() -> None:
    # A 10 x 6 matrix in blocks of 4: rows 4 + 4 + 2, cols 4 + 2, i.e. six blocks of four shapes. Blocked SOAP
    # must equal unblocked SOAP run separately on each block.
    w0 = torch.randn(10, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads = grad_stream((10, 6), 8, seed=4)
    p = w0.clone().requires_grad_()
    blocked = run_soap([p], [[g] for g in grads], **soap_kwargs(HP, block_size=4))
    rows, cols = ((0, 4), (4, 8), (8, 10)), ((0, 4), (4, 6))
    pieces = [w0[r0:r1, c0:c1].clone().requires_grad_() for r0, r1 in rows for c0, c1 in cols]
    piece_grads = [[g[r0:r1, c0:c1] for r0, r1 in rows for c0, c1 in cols] for g in grads]
    separate = run_soap(pieces, piece_grads, **soap_kwargs(HP, partition_grads_into_blocks=False))
    for t in range(len(grads)):
        i = 0
        for r0, r1 in rows:
            for c0, c1 in cols:
                torch.testing.assert_close(blocked[t][0][r0:r1, c0:c1], separate[t][i], rtol=0, atol=1e-12)
                i += 1


def test_square_blocks_match_the_oracle() -> None:
    # 8 x 4 in blocks of 4: two square blocks, each must follow the float64 oracle.
    w0 = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    grads = grad_stream((8, 4), 10, seed=6)
    p = w0.clone().requires_grad_()
    got = run_soap([p], [[g] for g in grads], **soap_kwargs(HP, block_size=4))
    for rows in (slice(0, 4), slice(4, 8)):
        expected = soap_oracle(w0[rows], [g[rows] for g in grads], **HP)  # type: ignore[arg-type]
        for t in range(len(grads)):
            torch.testing.assert_close(got[t][0][rows], expected[t], rtol=0, atol=1e-10)


def test_one_block_matrix_blocked_equals_unblocked() -> None:
    w0 = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    grads = grad_stream((6, 5), 6, seed=8)
    a = w0.clone().requires_grad_()
    b = w0.clone().requires_grad_()
    blocked = run_soap([a], [[g] for g in grads], **soap_kwargs(HP, block_size=8))
    unblocked = run_soap([b], [[g] for g in grads], **soap_kwargs(HP, partition_grads_into_blocks=False))
    for x, y in zip(blocked, unblocked, strict=True):
        assert torch.equal(x[0], y[0])


def test_first_step_only_initialises() -> None:
    gen = torch.Generator().manual_seed(10)
    w = torch.randn(6, 4, dtype=torch.float64, generator=gen).requires_grad_()
    gain = torch.randn(6, dtype=torch.float64, generator=gen).requires_grad_()
    before = [w.detach().clone(), gain.detach().clone()]
    opt = SOAP([w, gain], lr=0.1, shampoo_beta=0.9, eps=1e-12, weight_decay=0.0)
    g = torch.randn(6, 4, dtype=torch.float64, generator=gen)
    w.grad, gain.grad = g.clone(), torch.randn(6, dtype=torch.float64, generator=gen)
    opt.step()
    assert torch.equal(w.detach(), before[0]) and torch.equal(gain.detach(), before[1])
    state = opt.state[w]
    torch.testing.assert_close(state["GG_L0"][0], 0.1 * g @ g.T)
    torch.testing.assert_close(state["GG_R0"][0], 0.1 * g.T @ g)
    for q in (state["Q_L0"][0], state["Q_R0"][0], opt.state[gain]["Q_L0"][0]):
        torch.testing.assert_close(q.T @ q, torch.eye(q.shape[0], dtype=torch.float64))
    assert not state["exp_avg0"].any() and not state["exp_avg_sq0"].any()

    # With weight decay, the first step only decays (Levanter: zero update, then add_decayed_weights).
    w2 = before[0].clone().requires_grad_()
    opt2 = SOAP([w2], lr=0.1, weight_decay=0.5)
    w2.grad = g.clone()
    opt2.step()
    torch.testing.assert_close(w2.detach(), before[0] * (1 - 0.1 * 0.5), rtol=0, atol=0)


def test_without_rotation_it_is_adam_after_the_skipped_step() -> None:
    # All dims >= max_precond_dim: no rotation, no blocks: Adam on g_2..g_T, with Levanter's bias corrections
    # counting the skipped first step (t instead of t - 1).
    b1, b2, eps, lr, wd = 0.9, 0.99, 1e-8, 0.01, 0.1
    w0 = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    grads = grad_stream((7, 3), 9, seed=9)
    p = w0.clone().requires_grad_()
    opt = SOAP([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, max_precond_dim=3, block_size=2)
    got = run_soap_opt(opt, [p], [[g] for g in grads])
    w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    for t, g in enumerate(grads, start=1):
        if t == 1:
            w = w * (1 - lr * wd)
        else:
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
            u = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps * (1 - b2**t) ** -0.5)
            w = w - lr * (u + wd * w)
        torch.testing.assert_close(got[t - 1][0], w, rtol=0, atol=1e-12)
    # The state holds no factors at all, and one unsplit block.
    assert set(opt.state[p]) == {"step", "exp_avg0", "exp_avg_sq0"} and opt.state[p]["exp_avg0"].shape == (1, 7, 3)


def test_rotation_equivariance() -> None:
    # Feeding U G V^T (U, V orthogonal) from U W0 V^T gives U W_t V^T: the eigenbases rotate with the problem.
    n = 6
    gen = torch.Generator().manual_seed(11)
    U = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=gen))[0]
    V = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=gen))[0]
    w0 = torch.randn(n, n, dtype=torch.float64, generator=gen)
    grads = grad_stream((n, n), 10, seed=12)
    a = w0.clone().requires_grad_()
    b = (U @ w0 @ V.T).requires_grad_()
    plain = run_soap([a], [[g] for g in grads], **soap_kwargs(HP))
    rotated = run_soap([b], [[U @ g @ V.T] for g in grads], **soap_kwargs(HP))
    for t in range(len(grads)):
        torch.testing.assert_close(rotated[t][0], U @ plain[t][0] @ V.T, rtol=0, atol=1e-9)
    # Adam (no rotation) is not equivariant: the test can tell the two apart.
    c = w0.clone().requires_grad_()
    d = (U @ w0 @ V.T).requires_grad_()
    adam_plain = run_soap([c], [[g] for g in grads], **soap_kwargs(HP, max_precond_dim=1))
    adam_rotated = run_soap([d], [[U @ g @ V.T] for g in grads], **soap_kwargs(HP, max_precond_dim=1))
    assert (adam_rotated[-1][0] - U @ adam_plain[-1][0] @ V.T).abs().max() > 1e-3


def test_routing_on_the_tiny_model() -> None:
    torch.manual_seed(0)
    model = build_model(SCALES["tiny-130k"])
    # Without Levanter's merge_small_dims (which would make every tiny matrix a vector: test_merge_dims.py).
    opt = build("soap", model, {"block_size": 32, "merge_small_dims": False})
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    state = {name: opt.state[p] for name, p in model.named_parameters()}
    # Byte vocabulary (256 < 10000): the embedding rotates on both sides, in 8 x 2 blocks of 32 x 32.
    assert state["tok_emb.weight"]["Q_L0"].shape == (16, 32, 32)
    assert state["lm_head.weight"]["Q_R0"].shape == (16, 32, 32)
    # Norm gains are vectors with a blocked n x n factor on their only side.
    gain = state["blocks.0.attn_norm.weight"]
    assert gain["Q_L0"].shape == (2, 32, 32) and "Q_R0" not in gain
    assert state["blocks.1.mlp.w2.weight"]["GG_L0"].shape == (16, 32, 32)
    # Decay mask: matrices and head decayed, embedding and norms not (Levanter).
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    named = dict(model.named_parameters())
    assert {id(named["lm_head.weight"]), id(named["blocks.0.attn.wq.weight"])} <= decayed
    assert not {id(named["tok_emb.weight"]), id(named["norm_f.weight"])} & decayed


def test_a_parameter_without_gradient_is_skipped() -> None:
    # Two same-shape matrices share a bucket; when one has no gradient for a step, the other still steps exactly
    # as it would alone, and the skipped one resumes where it was (its own step count).
    gen = torch.Generator().manual_seed(14)
    w0 = [torch.randn(4, 4, dtype=torch.float64, generator=gen) for _ in range(2)]
    grads = grad_stream((2, 4, 4), 5, seed=15)
    has_grad = [(True, True), (True, True), (True, False), (True, True), (False, True)]
    pair = [w.clone().requires_grad_() for w in w0]
    opt = SOAP(pair, **soap_kwargs(HP))  # type: ignore[arg-type]
    for g, flags in zip(grads, has_grad, strict=True):
        for i, p in enumerate(pair):
            p.grad = g[i].clone() if flags[i] else None
        opt.step()
    for i in range(2):
        alone = w0[i].clone().requires_grad_()
        steps = [[g[i]] for g, flags in zip(grads, has_grad, strict=True) if flags[i]]
        expected = run_soap([alone], steps, **soap_kwargs(HP))[-1][0]
        torch.testing.assert_close(pair[i].detach(), expected, rtol=0, atol=1e-12)


def test_equal_blocks_of_all_parameters_share_one_stack_between_steps() -> None:
    # Speed: after the first steps every state tensor of a bucket is a view of one stacked tensor, so a step
    # does not concatenate the factors again (soap.stacked's fast path).
    torch.manual_seed(0)
    model = build_model(SCALES["tiny-130k"])
    opt = build("soap", model, {"block_size": 32, "precondition_frequency": 10, "merge_small_dims": False})
    matrices = [p for name, p in model.named_parameters() if p.ndim == 2]
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
    for key in ("Q_L0", "GG_R0", "exp_avg0", "exp_avg_sq0"):
        bases = {id(opt.state[p][key]._base) for p in matrices}
        assert len(bases) == 1 and None not in {opt.state[p][key]._base for p in matrices}, key


def test_paper_vocabulary_dim_is_not_rotated_nor_split() -> None:
    head = torch.zeros(12000, 512, requires_grad=True)  # a vocab dim >= max_precond_dim (10000)
    opt = SOAP([head], block_size=256)
    rotate, regions, _ = opt.layout(head, opt.param_groups[0])
    assert rotate == (False, True)
    assert [(r.rows, r.r, r.cols, r.c) for r in regions] == [(1, 12000, 2, 256)]


def test_bf16_params_keep_fp32_state_and_round_trip() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(32, 1, 2, 64, 16, 64)).to(torch.bfloat16)
    opt = build("soap", model, {"lr": 1e-2, "block_size": 16})
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
    for p in model.parameters():
        assert p.dtype == torch.bfloat16
        assert all(v.dtype == torch.float32 for v in opt.state[p].values() if isinstance(v, torch.Tensor))
    fresh = build("soap", model, {"lr": 1e-2, "block_size": 16})
    fresh.load_state_dict(copy.deepcopy(opt.state_dict()))
    for p in model.parameters():
        assert all(v.dtype == torch.float32 for v in fresh.state[p].values() if isinstance(v, torch.Tensor))


def test_state_dict_round_trip_is_bitwise() -> None:
    torch.manual_seed(0)
    config = ModelConfig(32, 1, 2, 64, 16, 64)
    model = build_model(config)
    hp = {"lr": 1e-2, "block_size": 16, "precondition_frequency": 2}
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(7)]

    def steps(m: torch.nn.Module, opt: torch.optim.Optimizer, which: range) -> None:
        for i in which:
            for p, g in zip(m.parameters(), grads[i], strict=True):
                p.grad = g.clone()
            opt.step()

    reference = copy.deepcopy(model)
    ref_opt = build("soap", reference, hp)
    steps(reference, ref_opt, range(7))

    first = copy.deepcopy(model)
    opt = build("soap", first, hp)
    steps(first, opt, range(3))
    saved = copy.deepcopy({"model": first.state_dict(), "opt": opt.state_dict()})
    steps(first, opt, range(3, 5))  # keep stepping the original: the copy must not alias it

    resumed = copy.deepcopy(model)
    resumed.load_state_dict(saved["model"])
    opt2 = build("soap", resumed, hp)
    opt2.load_state_dict(saved["opt"])
    steps(resumed, opt2, range(3, 7))
    for a, b in zip(reference.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_eigh_falls_back_to_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.linalg.eigh
    calls: list[torch.dtype] = []

    def flaky(a: torch.Tensor) -> Any:
        calls.append(a.dtype)
        if a.dtype == torch.float32:
            raise torch.linalg.LinAlgError("did not converge")
        return real(a)

    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    a = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(13))
    q = eigh_descending(a @ a.mT)
    assert calls == [torch.float32, torch.float64] and q.dtype == torch.float32
    torch.testing.assert_close(q.mT @ q, torch.eye(4).expand(2, 4, 4), atol=1e-5, rtol=0)


def test_spaces_hold_the_paper_baseline() -> None:
    spec = get_spec("soap")
    hp = resolve_hparams(spec, "paper")
    assert (hp["lr"], hp["precondition_frequency"], hp["block_size"], hp["eps"], hp["warmup"]) == (
        1.6e-2,
        1,
        256,
        1e-15,
        1000,
    )
    assert set(spec.spaces["paper"].grid) == set(spec.spaces["tiny"].grid)
    for name, values in spec.spaces["paper"].grid.items():
        assert len(values) == len(spec.spaces["tiny"].grid[name])
