"""PSGD Kron (Levanter's variant): a float64 oracle written from the math, reductions, whitening, schedule, state.

The oracle follows Levanter's scale_by_kron (OPTIMIZERS.md 3.9): momentum with bias correction, the damped
momentum G = m_hat + sqrt(eps_f32) mean|m_hat| V, A = Q_L G Q_R^T, conjB = Q_L^-T V Q_R^-1, triangular factor
steps normalised by a spectral-norm lower bound, diagonal steps by a max, u = Q_L^T Q_L m_hat Q_R^T Q_R, the 1.1
RMS clip and decoupled decay. The noise V is drawn from a generator seeded like the optimizer's, in the same order
(one draw per block stack, parameters in order), so the oracle sees the same V.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch

from workers.model import SCALES, ModelConfig, build_model
from workers.optimizers import build, get_spec, resolve_hparams
from workers.optimizers.kron import (
    DAMP_EPS,
    Kron,
    conj_b,
    form_gram,
    norm_lower_bound,
    stacked_leaves,
    triu_matmul,
    triu_triu_matmul,
    update_probability,
)

# p(t) = 0: no preconditioner updates at all; p(t) = 1: an update every step.
NEVER: dict[str, Any] = dict(preconditioner_update_probability=0.0, update_prob_flat_start=-(10**7))
ALWAYS: dict[str, Any] = dict(update_prob_flat_start=10**7)


def lower_bound_oracle(a: torch.Tensor) -> torch.Tensor:
    top = a.abs().max()
    s = a / top
    x = s[:, int((s * s).sum(0).argmax())] @ s
    return top * torch.linalg.norm((x / x.norm()) @ s.T)


def kron_oracle(
    params: list[torch.Tensor], grads: list[list[torch.Tensor]], *, lr: float, b1: float, wd: float, plr: float
) -> list[list[torch.Tensor]]:
    """Levanter's Kron in float64 with an update every step; 2-D params triangular, 1-D params diagonal."""
    gen = torch.Generator().manual_seed(0)
    ws = [p.detach().clone() for p in params]
    ms = [torch.zeros_like(w) for w in ws]
    qs: list[list[torch.Tensor]] = [
        [torch.eye(w.shape[0], dtype=w.dtype), torch.eye(w.shape[1], dtype=w.dtype)]
        if w.ndim == 2
        else [torch.ones_like(w)]
        for w in ws
    ]
    tiny = torch.finfo(torch.float64).tiny
    out = []
    for t, gs in enumerate(grads, start=1):
        for i, g in enumerate(gs):
            ms[i] = b1 * ms[i] + (1 - b1) * g
            mh = ms[i] / (1 - b1**t)
            v = torch.randn(mh.shape, generator=gen, dtype=torch.float64)
            g_in = mh + DAMP_EPS * mh.abs().mean() * v
            if mh.ndim == 2:
                ql, qr = qs[i]
                a = ql @ g_in @ qr.T
                b = torch.linalg.inv(ql).T @ v @ torch.linalg.inv(qr)
                t1, t2 = a @ a.T, b @ b.T
                ql_new = ql - plr / (lower_bound_oracle(t1 + t2) + tiny) * torch.triu(t1 - t2) @ ql
                t1, t2 = a.T @ a, b.T @ b
                qr_new = qr - plr / (lower_bound_oracle(t1 + t2) + tiny) * torch.triu(t1 - t2) @ qr
                qs[i] = [ql_new, qr_new]
                u = ql_new.T @ ql_new @ mh @ qr_new.T @ qr_new
            else:
                (q,) = qs[i]
                a, b = q * g_in, v / q
                q = q - plr / ((a * a + b * b).abs().max() + tiny) * (a * a - b * b) * q
                qs[i] = [q]
                u = q * q * mh
            u = u / max(1.0, float(u.pow(2).mean().sqrt()) / 1.1)
            ws[i] = ws[i] - lr * (u + wd * ws[i])
        out.append([w.clone() for w in ws])
    return out


def run(
    opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[list[torch.Tensor]]
) -> list[list[torch.Tensor]]:
    history = []
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone().to(p.dtype)
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history


def stream(shapes: list[tuple[int, ...]], steps: int, seed: int, scale: float = 1.0) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [[scale * torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes] for _ in range(steps)]


def test_matches_float64_oracle_with_updates_every_step() -> None:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(5, 3, dtype=torch.float64, generator=gen).requires_grad_()
    gain = torch.randn(4, dtype=torch.float64, generator=gen).requires_grad_()
    grads = stream([(5, 3), (4,)], 8, seed=2, scale=3.0)  # large enough for the RMS clip to act
    expected = kron_oracle([w, gain], grads, lr=0.05, b1=0.9, wd=0.1, plr=0.2)
    opt = Kron([w, gain], lr=0.05, beta1=0.9, weight_decay=0.1, preconditioner_lr=0.2, max_grad_norm=0.0, **ALWAYS)
    got = run(opt, [w, gain], grads)
    for t in range(len(grads)):
        for e, g in zip(expected[t], got[t], strict=True):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-10, msg=f"step {t + 1}")
    assert not torch.allclose(opt.state[w]["Q_L0"][0], torch.eye(5, dtype=torch.float64))


def test_without_updates_and_identity_factors_the_update_is_clipped_m_hat() -> None:
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(6, 4, dtype=torch.float64, generator=gen).requires_grad_()
    gain = torch.randn(5, dtype=torch.float64, generator=gen).requires_grad_()
    params = [w, gain]
    # Big gradients first (RMS clip active), then small ones (inactive).
    grads = stream([(6, 4), (5,)], 4, seed=4, scale=5.0) + stream([(6, 4), (5,)], 4, seed=5, scale=0.05)
    lr, b1, wd = 0.1, 0.9, 0.1
    opt = Kron(params, lr=lr, beta1=b1, weight_decay=wd, max_grad_norm=0.0, **NEVER)
    start = [p.detach().clone() for p in params]
    got = run(opt, params, grads)
    clipped = []
    ws = start
    ms = [torch.zeros_like(x) for x in ws]
    for t, gs in enumerate(grads, start=1):
        for i, g in enumerate(gs):
            ms[i] = b1 * ms[i] + (1 - b1) * g
            m_hat = ms[i] / (1 - b1**t)
            rms = float(m_hat.pow(2).mean().sqrt())
            clipped.append(rms > 1.1)
            u = m_hat / max(1.0, rms / 1.1)
            ws[i] = ws[i] - lr * (u + wd * ws[i])
            torch.testing.assert_close(got[t - 1][i], ws[i], rtol=0, atol=1e-12)
    assert any(clipped) and not all(clipped)
    torch.testing.assert_close(opt.state[w]["Q_L0"][0], torch.eye(6, dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(opt.state[gain]["Q_L0"][0], torch.ones(5, dtype=torch.float64), rtol=0, atol=0)


def test_converges_to_a_whitening_preconditioner() -> None:
    # Stationary G = A Z B^T, Z ~ N(0, I): E[g g^T] = Sigma_R (x) Sigma_L with Sigma_L = A A^T, Sigma_R = B B^T.
    # PSGD's fixed point is P Sigma P = I, which for Kronecker factors means P_L Sigma_L P_L = c I (and the same
    # on the right). Sigma_L has condition number 100: an unadapted P would leave M's spectrum spread 100x.
    gen = torch.Generator().manual_seed(6)
    m, n = 5, 4
    rot_l = torch.linalg.qr(torch.randn(m, m, dtype=torch.float64, generator=gen))[0]
    rot_r = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=gen))[0]
    a = rot_l @ torch.diag(torch.logspace(0, 1, m, dtype=torch.float64)) @ rot_l.T  # Sigma_L eigenvalues 1..100
    b = rot_r @ torch.diag(torch.logspace(0, 0.5, n, dtype=torch.float64)) @ rot_r.T  # Sigma_R eigenvalues 1..10
    w = torch.zeros(m, n, dtype=torch.float64, requires_grad=True)
    opt = Kron([w], lr=0.0, beta1=0.0, weight_decay=0.0, preconditioner_lr=0.1, max_grad_norm=0.0, **ALWAYS)
    p_l = torch.zeros(m, m, dtype=torch.float64)
    p_r = torch.zeros(n, n, dtype=torch.float64)
    steps, tail = 1500, 500
    for step in range(steps):
        w.grad = a @ torch.randn(m, n, dtype=torch.float64, generator=gen) @ b.T
        opt.step()
        if step >= steps - tail:
            q_l, q_r = opt.state[w]["Q_L0"][0], opt.state[w]["Q_R0"][0]
            p_l += q_l.T @ q_l / tail
            p_r += q_r.T @ q_r / tail
    for p, sigma in ((p_l, a @ a.T), (p_r, b @ b.T)):
        eig = torch.linalg.eigvalsh(p @ sigma @ p)
        assert float(eig.max() / eig.min()) < 1.6, eig  # 100 and 10 for P = I; 1.15-1.36 measured over 6 seeds


def test_update_probability_schedule_at_exact_steps() -> None:
    # Levanter: clip(exp(-0.001 (n - flat_start)), min_prob, 1).
    assert update_probability(1, 0.05, 2000) == 1.0
    assert update_probability(2000, 0.05, 2000) == 1.0
    assert update_probability(2001, 0.05, 2000) == pytest.approx(math.exp(-0.001))
    assert update_probability(3000, 0.05, 2000) == pytest.approx(math.exp(-1.0))
    assert update_probability(4995, 0.05, 2000) == pytest.approx(math.exp(-2.995))  # just above the floor
    assert update_probability(5000, 0.05, 2000) == 0.05  # exp(-3) = 0.0498 < 0.05
    assert update_probability(10**6, 0.1, 500) == 0.1


def test_preconditioner_updates_follow_the_deterministic_counter() -> None:
    # flat_start -1000: p(1) = e^-1.001 (every 3rd step), falling to the 0.3 floor (every 4th step) by step 204.
    min_prob, flat_start, steps = 0.3, -1000, 260
    expected, counter = [], 0
    for t in range(1, steps + 1):
        counter += 1
        if counter >= 1 / max(min_prob, min(1.0, math.exp(-0.001 * (t - flat_start)))):
            expected.append(t)
            counter = 0
    w = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    opt = Kron(
        [w], lr=0.0, preconditioner_update_probability=min_prob, update_prob_flat_start=flat_start, max_grad_norm=0.0
    )
    observed = []
    gen = torch.Generator().manual_seed(7)
    for t in range(1, steps + 1):
        before = opt.state[w]["Q_L0"].clone() if opt.state[w] else torch.eye(3, dtype=torch.float64)[None]
        w.grad = torch.randn(3, 2, dtype=torch.float64, generator=gen)
        opt.step()
        after = opt.state[w]["Q_L0"]
        if not torch.equal(before, after):
            observed.append(t)
    assert observed == expected
    assert observed[:3] == [3, 6, 9] and observed[-1] - observed[-2] == 4


def test_state_dict_round_trip_is_bitwise_with_counters_and_rng() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(32, 1, 2, 64, 16, 64))
    # Updates every 2-3 steps so that the counter is mid-cycle when we save.
    hp = {"lr": 1e-2, "block_size": 16, "update_prob_flat_start": -700, "preconditioner_update_probability": 0.3}
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(9)]

    def steps(m: torch.nn.Module, opt: torch.optim.Optimizer, which: range) -> None:
        for i in which:
            for p, g in zip(m.parameters(), grads[i], strict=True):
                p.grad = g.clone()
            opt.step()

    reference = copy.deepcopy(model)
    steps(reference, build("kron", reference, hp), range(9))

    first = copy.deepcopy(model)
    opt = build("kron", first, hp)
    steps(first, opt, range(4))
    saved = copy.deepcopy({"model": first.state_dict(), "opt": opt.state_dict()})
    assert saved["opt"]["kron"]["step"] == 4 and saved["opt"]["kron"]["update_counter"] == 1
    steps(first, opt, range(4, 6))  # keep stepping the original: the copy must not alias it

    def resume(reseed: bool) -> torch.nn.Module:
        m = copy.deepcopy(model)
        m.load_state_dict(saved["model"])
        o = build("kron", m, hp)
        o.load_state_dict(copy.deepcopy(saved["opt"]))
        if reseed:
            assert isinstance(o, Kron)
            o._generator.manual_seed(123)  # what losing the RNG state would do
        steps(m, o, range(4, 9))
        return m

    resumed = resume(reseed=False)
    for a, b in zip(reference.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    reseeded = resume(reseed=True)
    assert any(not torch.equal(a, b) for a, b in zip(reference.parameters(), reseeded.parameters(), strict=True))


def test_round_trip_across_the_100th_update_keeps_the_balance_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    balanced_at: list[int] = []
    real_balance = Kron._balance

    def counting(*args: torch.Tensor | str) -> tuple[torch.Tensor, torch.Tensor]:
        balanced_at.append(opt._step)
        return real_balance(*args)  # type: ignore[arg-type]

    gen = torch.Generator().manual_seed(11)
    grads = [torch.randn(4, 3, dtype=torch.float64, generator=gen) for _ in range(104)]
    w = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    opt = Kron([w], lr=0.01, **ALWAYS)
    monkeypatch.setattr(Kron, "_balance", staticmethod(counting))
    reference = run(opt, [w], [[g] for g in grads])[-1][0]
    assert balanced_at == [100]  # Levanter: on the 100th preconditioner update

    w2 = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    opt = Kron([w2], lr=0.01, **ALWAYS)
    run(opt, [w2], [[g] for g in grads[:98]])
    saved = copy.deepcopy(opt.state_dict())
    assert saved["kron"]["balance_counter"] == 98
    w3 = w2.detach().clone().requires_grad_()
    opt = Kron([w3], lr=0.01, **ALWAYS)
    opt.load_state_dict(saved)
    balanced_at.clear()
    assert torch.equal(run(opt, [w3], [[g] for g in grads[98:]])[-1][0], reference)
    assert balanced_at == [100]


def test_bf16_params_keep_fp32_factors() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(32, 1, 2, 64, 16, 64)).to(torch.bfloat16)
    opt = build("kron", model, {"lr": 1e-2, "block_size": 16})
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
    fresh = build("kron", model, {"lr": 1e-2, "block_size": 16})
    fresh.load_state_dict(copy.deepcopy(opt.state_dict()))
    for o in (opt, fresh):
        for p in model.parameters():
            assert p.dtype == torch.bfloat16
            tensors = [v for v in o.state[p].values() if isinstance(v, torch.Tensor)]
            assert tensors and all(v.dtype == torch.float32 for v in tensors)
            assert torch.isfinite(p.float()).all()


def test_normalize_grads_and_rms_clip_act_per_stacked_leaf() -> None:
    torch.manual_seed(0)
    model = build_model(SCALES["tiny-130k"])
    names = [[n for n, p in model.named_parameters() if any(p is q for q in leaf)] for leaf in stacked_leaves(model)]
    assert ["blocks.0.attn.wq.weight", "blocks.1.attn.wq.weight"] in names and ["tok_emb.weight"] in names
    # Two "layers" of one leaf: with b1 = 0, Q = I and no factor updates, u = g / ||leaf|| (then the RMS clip).
    gen = torch.Generator().manual_seed(8)
    a = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    opt = Kron([a, b], lr=1.0, beta1=0.0, weight_decay=0.0, normalize_grads=True, leaves=[[a, b]], **NEVER)
    ga, gb = (
        torch.randn(4, 3, dtype=torch.float64, generator=gen),
        torch.randn(4, 3, dtype=torch.float64, generator=gen),
    )
    a.grad, b.grad = ga.clone(), gb.clone()
    opt.step()
    norm = torch.sqrt(ga.pow(2).sum() + gb.pow(2).sum())  # leaf RMS = 1/sqrt(24) < 1.1: no clip
    torch.testing.assert_close(-a.detach(), ga / norm, rtol=0, atol=1e-14)
    torch.testing.assert_close(-b.detach(), gb / norm, rtol=0, atol=1e-14)
    # The RMS clip over the leaf: rms(u) = 2.2 over both parameters -> halved, even though b alone is small.
    c = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    d = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    opt = Kron([c, d], lr=1.0, beta1=0.0, weight_decay=0.0, max_grad_norm=0.0, leaves=[[c, d]], **NEVER)
    c.grad = torch.full((4, 3), math.sqrt(2 * 2.2**2 - 0.01), dtype=torch.float64)
    d.grad = torch.full((4, 3), 0.1, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(-d.detach(), torch.full((4, 3), 0.05, dtype=torch.float64), rtol=0, atol=1e-14)


def test_momentum_accumulates_normalized_gradients() -> None:
    # normalize_grads with b1 > 0: m averages g / ||g||, and u = m_hat (Q = I, no factor updates, small RMS).
    gen = torch.Generator().manual_seed(12)
    w = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    opt = Kron([w], lr=1.0, beta1=0.5, weight_decay=0.0, normalize_grads=True, **NEVER)
    m = torch.zeros(4, 3, dtype=torch.float64)
    expected = torch.zeros(4, 3, dtype=torch.float64)
    for t in range(1, 4):
        g = torch.randn(4, 3, dtype=torch.float64, generator=gen) * 10.0**t
        w.grad = g.clone()
        opt.step()
        m = 0.5 * m + 0.5 * g / g.norm()
        expected = expected - m / (1 - 0.5**t)
        torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-13)


def test_global_clip_only_without_normalize_grads() -> None:
    w = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    g = torch.full((3, 3), 2.0, dtype=torch.float64)  # norm 6
    opt = Kron([w], lr=1.0, beta1=0.0, weight_decay=0.0, max_grad_norm=3.0, **NEVER)
    w.grad = g.clone()
    opt.step()
    torch.testing.assert_close(-w.detach(), g / 2, rtol=0, atol=1e-14)  # clipped to norm 3; RMS 1 < 1.1
    assert torch.equal(w.grad, g)  # the optimizer does not modify p.grad


def test_triangular_pieces() -> None:
    gen = torch.Generator().manual_seed(9)
    ql = torch.triu(torch.randn(2, 4, 4, dtype=torch.float64, generator=gen)) + 3 * torch.eye(4, dtype=torch.float64)
    qr = torch.triu(torch.randn(2, 3, 3, dtype=torch.float64, generator=gen)) + 3 * torch.eye(3, dtype=torch.float64)
    v = torch.randn(2, 4, 3, dtype=torch.float64, generator=gen)
    expected = torch.linalg.inv(ql).mT @ v @ torch.linalg.inv(qr)
    torch.testing.assert_close(conj_b(ql, "tri", qr, "tri", v), expected)
    x = torch.randn(6, 8, 8, dtype=torch.float64, generator=gen)
    sym = x @ x.mT
    bound = norm_lower_bound(sym)
    exact = torch.linalg.matrix_norm(sym, ord=2)
    assert bool((bound <= exact * (1 + 1e-12)).all()) and bool((bound >= exact / math.sqrt(2)).all())
    for i in range(6):
        torch.testing.assert_close(bound[i], lower_bound_oracle(sym[i]))
    assert float(norm_lower_bound(torch.zeros(1, 3, 3))[0]) == 0.0


def test_gram_is_formed_only_where_it_pays() -> None:
    # P = Q^T Q costs n^3 once and saves n^2 x other per step: formed when interval x other > n.
    assert not form_gram("tri", 1024, 256, 1.0)  # early phase, a 4:1 matrix's long side: Q^T (Q m)
    assert form_gram("tri", 256, 1024, 1.0)  # its short side: P pays at once
    assert not form_gram("tri", 256, 256, 1.0)  # square, factors changing every step: a tie, keep Q^T Q m
    assert form_gram("tri", 1024, 256, 20.0)  # late phase (p = 0.05): both sides cached
    assert form_gram("tri", 256, 256, math.inf)  # never updated again
    assert form_gram("diag", 4096, 1, 1.0)  # q^2 is always cheap


def test_both_ways_of_preconditioning_give_the_same_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    # An 18 x 4 matrix with updates every ~3rd step: its long side is applied as Q^T (Q m), its short side by a
    # cached P (form_gram). Forcing P on both sides must give the same parameters (float64, rounding only).
    gen = torch.Generator().manual_seed(11)
    w0 = torch.randn(18, 4, dtype=torch.float64, generator=gen)
    grads = stream([(18, 4)], 12, seed=12)
    hp: dict[str, Any] = dict(
        lr=0.05, beta1=0.9, preconditioner_lr=0.2, max_grad_norm=0.0, update_prob_flat_start=-1000
    )
    w = w0.clone().requires_grad_()
    mixed = run(Kron([w], preconditioner_update_probability=0.3, **hp), [w], grads)
    monkeypatch.setattr("workers.optimizers.kron.form_gram", lambda *args: True)
    w = w0.clone().requires_grad_()
    always_p = run(Kron([w], preconditioner_update_probability=0.3, **hp), [w], grads)
    for t in range(len(grads)):
        torch.testing.assert_close(mixed[t][0], always_p[t][0], rtol=0, atol=1e-12, msg=f"step {t + 1}")
    assert not torch.allclose(mixed[-1][0], w0)


@pytest.mark.parametrize("n", [4, 7, 13, 32])
def test_triangular_products_equal_dense_ones(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    # Split down to 2 x 2 blocks (odd sizes split unevenly): every product must equal the dense one.
    monkeypatch.setattr("workers.optimizers.kron.TRIANGULAR_SPLIT_MIN", 1)
    gen = torch.Generator().manual_seed(n)
    q = torch.triu(torch.randn(3, n, n, dtype=torch.float64, generator=gen))
    b = torch.triu(torch.randn(3, n, n, dtype=torch.float64, generator=gen))
    x = torch.randn(3, n, 5, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(triu_matmul(q, x), q @ x, rtol=0, atol=1e-12)
    torch.testing.assert_close(triu_matmul(q, x, transpose=True), q.mT @ x, rtol=0, atol=1e-12)
    strided = torch.randn(3, 5, n, dtype=torch.float64, generator=gen).mT  # a transposed view, as right_mul passes
    torch.testing.assert_close(triu_matmul(q, strided), q @ strided, rtol=0, atol=1e-12)
    torch.testing.assert_close(triu_triu_matmul(q, b), q @ b, rtol=0, atol=1e-12)
    assert bool((torch.tril(triu_triu_matmul(q, b), diagonal=-1) == 0).all())


def test_split_products_reach_the_oracle(monkeypatch: pytest.MonkeyPatch) -> None:
    # The whole optimizer with every triangular product split: still Levanter's Kron (the float64 oracle).
    monkeypatch.setattr("workers.optimizers.kron.TRIANGULAR_SPLIT_MIN", 1)
    gen = torch.Generator().manual_seed(13)
    w = torch.randn(9, 6, dtype=torch.float64, generator=gen).requires_grad_()
    grads = stream([(9, 6)], 6, seed=14, scale=3.0)
    expected = kron_oracle([w], grads, lr=0.05, b1=0.9, wd=0.1, plr=0.2)
    opt = Kron([w], lr=0.05, beta1=0.9, weight_decay=0.1, preconditioner_lr=0.2, max_grad_norm=0.0, **ALWAYS)
    got = run(opt, [w], grads)
    for t in range(len(grads)):
        torch.testing.assert_close(got[t][0], expected[t][0], rtol=0, atol=1e-10, msg=f"step {t + 1}")


def test_balance_keeps_the_preconditioner() -> None:
    gen = torch.Generator().manual_seed(10)
    ql = torch.triu(torch.randn(3, 4, 4, dtype=torch.float64, generator=gen)) * 10
    qr = torch.triu(torch.randn(3, 3, 3, dtype=torch.float64, generator=gen)) * 0.1
    bl, br = Kron._balance(ql, "tri", qr, "tri")
    torch.testing.assert_close(bl.abs().amax((-2, -1)), br.abs().amax((-2, -1)))
    for i in range(3):
        torch.testing.assert_close(torch.kron(bl[i], br[i]), torch.kron(ql[i], qr[i]))


def test_spaces_hold_the_paper_baseline() -> None:
    spec = get_spec("kron")
    assert spec.clips_itself
    hp = resolve_hparams(spec, "paper")
    assert (hp["lr"], hp["wd"], hp["preconditioner_lr"], hp["update_prob_flat_start"], hp["normalize_grads"]) == (
        2e-3,
        0.7,
        0.2,
        2000,
        True,
    )
    assert set(spec.spaces["paper"].grid) == set(spec.spaces["tiny"].grid)
    for name, values in spec.spaces["paper"].grid.items():
        assert len(values) == len(spec.spaces["tiny"].grid[name])
