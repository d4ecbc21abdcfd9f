from __future__ import annotations

import copy
import math

import pytest
import torch

from workers.model import SCALES, Transformer, build_model, param_role
from workers.optimizers import adam_mini, build, get_spec, resolve_hparams
from workers.optimizers.base import decay_param_groups

CONFIG = SCALES["tiny-130k"]  # d 64, 2 layers, 2 heads (head_dim 32), d_ff 256, vocab 256


def _set_grads(model: Transformer, seed: int) -> dict[str, torch.Tensor]:
    """Gradient-like tensors on every parameter (returned as copies by name); cheaper than a backward pass.

    Rows get scales spread over three decades (blocks of very different size, as in a real model), and the
    embedding rows of tokens 200.. are zero, as for tokens absent from a batch (v = 0 blocks).
    """
    gen = torch.Generator().manual_seed(seed)
    grads = {}
    for name, p in model.named_parameters():
        g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        rows = torch.logspace(-3, 0, p.shape[0], dtype=p.dtype)[torch.randperm(p.shape[0], generator=gen)]
        g = g * rows.view(-1, *([1] * (p.dim() - 1)))  # (rows, 1...) broadcast over each row
        if name == "tok_emb.weight":
            g[200:] = 0
        p.grad = g
        grads[name] = g.clone()
    return grads


def _expected_blocks(name: str) -> int | None:
    """How many v scalars per tensor the paper's partition gives; None = elementwise AdamW (norms)."""
    role = param_role(name)
    if role == "norm":
        return None
    if name.endswith(("attn.wq.weight", "attn.wk.weight")):
        return CONFIG.n_heads
    return {"embedding": CONFIG.vocab_size, "head": CONFIG.vocab_size}.get(role, _rows(name))


def _rows(name: str) -> int:
    return CONFIG.d_ff if name.endswith(("mlp.w1.weight", "mlp.w3.weight")) else CONFIG.d_model


# --- partition and routing ------------------------------------------------------------------------------


def test_partition_counts_on_the_tiny_model() -> None:
    model = build_model(CONFIG)
    opt = build("adam_mini", model, {"wd": 0.1})
    _set_grads(model, 0)
    opt.step()
    params = dict(model.named_parameters())
    counts = {n: opt.state[p]["exp_avg_sq"].numel() for n, p in params.items()}
    # Hand-written counts for tiny-130k: per head for q/k, per output row elsewhere, elementwise for norms.
    expected_by_suffix = {
        "tok_emb.weight": 256,  # one per token
        "lm_head.weight": 256,  # one per vocabulary row
        "attn.wq.weight": 2,  # one per head
        "attn.wk.weight": 2,
        "attn.wv.weight": 64,
        "attn.wo.weight": 64,
        "mlp.w1.weight": 256,
        "mlp.w3.weight": 256,
        "mlp.w2.weight": 64,
        "norm.weight": 64,  # AdamW part: one v per element
        "norm_f.weight": 64,
    }
    for name, count in counts.items():
        suffix = next(s for s in expected_by_suffix if name.endswith(s))
        assert count == expected_by_suffix[suffix], name
        blocks = _expected_blocks(name)
        assert count == (params[name].numel() if blocks is None else blocks), name
    assert sum(counts.values()) == 256 + 256 + 5 * 64 + 2 * (2 + 2 + 64 + 64 + 256 + 256 + 64)


def test_routing_rules_and_decay_mask() -> None:
    model = build_model(CONFIG)
    opt = build("adam_mini", model, {"wd": 0.2})
    rule_of = {id(p): g["rule"] for g in opt.param_groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        role = param_role(name)
        assert rule_of[id(p)] == ("adamw" if role == "norm" else "mini"), name
        assert decay_of[id(p)] == (0.2 if role in ("matrix", "head") else 0.0), name  # Levanter's mask
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    spec = get_spec("adam_mini")
    assert spec.clips_itself


def test_state_is_about_one_copy_of_the_parameters() -> None:
    model = build_model(CONFIG)
    opt = build("adam_mini", model)
    _set_grads(model, 0)
    opt.step()
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    state_bytes = sum(
        v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)
    )
    ratio = state_bytes / param_bytes
    # m is 1x; v adds (1928 block scalars + 320 norm entries) / 196,928 parameters = 1.1%.
    assert 1.0 < ratio < 1.02, ratio


# --- reductions and oracles -------------------------------------------------------------------------------


def test_blocks_of_one_element_equal_adamw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adam_mini, "num_blocks", lambda name, shape, n_heads: math.prod(shape))
    torch.manual_seed(0)
    model = build_model(CONFIG).double()
    reference = copy.deepcopy(model)
    hp = {"lr": 1e-2, "wd": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-10, "max_grad_norm": 0.0}
    opt = build("adam_mini", model, hp)
    torch_opt = torch.optim.AdamW(decay_param_groups(reference, 0.1), lr=1e-2, betas=(0.9, 0.95), eps=1e-10)
    for step in range(12):
        grads = _set_grads(model, step)
        for n, p in reference.named_parameters():
            p.grad = grads[n].clone()
        opt.step()
        torch_opt.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=name)


def _oracle_step(
    params: dict[str, torch.Tensor],
    grads: dict[str, torch.Tensor],
    state: dict[str, dict[str, torch.Tensor]],
    t: int,
    lr: float,
    hp: dict[str, float],
) -> None:
    """One Adam-mini step in Levanter's form (block mean REPEATED to full size), float64, in place."""
    b1, b2, eps, wd, clip = hp["beta1"], hp["beta2"], hp["eps"], hp["wd"], hp["max_grad_norm"]
    norms = [n for n in params if param_role(n) == "norm"]
    total = math.sqrt(sum(float(grads[n].pow(2).sum()) for n in norms))
    clip_scale = min(1.0, clip / (total + 1e-6)) if clip > 0 else 1.0  # torch/functional clip formula
    for name, p in params.items():
        g = grads[name] * clip_scale if name in norms else grads[name]
        st = state.setdefault(name, {"m": torch.zeros_like(p), "v": torch.zeros_like(p)})
        st["m"] = b1 * st["m"] + (1 - b1) * g
        blocks = _expected_blocks(name)
        if blocks is None:
            g2 = g * g
        else:
            mean = (g * g).reshape(blocks, -1).mean(dim=1, keepdim=True)  # (blocks, 1)
            g2 = mean.expand(blocks, p.numel() // blocks).reshape(p.shape)  # repeated to full size
        st["v"] = b2 * st["v"] + (1 - b2) * g2
        u = (st["m"] / (1 - b1**t)) / ((st["v"] / (1 - b2**t)).sqrt() + eps)
        decay = wd if param_role(name) in ("matrix", "head") else 0.0
        params[name] = p - lr * (u + decay * p)


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.05])
def test_matches_the_float64_oracle_over_12_steps(max_grad_norm: float) -> None:
    torch.manual_seed(1)
    model = build_model(CONFIG).double()
    hp = {"lr": 2e-2, "wd": 0.1, "beta1": 0.9, "beta2": 0.98, "eps": 1e-12, "max_grad_norm": max_grad_norm}
    opt = build("adam_mini", model, hp)
    oracle = {n: p.detach().clone() for n, p in model.named_parameters()}
    state: dict[str, dict[str, torch.Tensor]] = {}
    for t in range(1, 13):
        factor = t / 12  # the trainer rescales group["lr"] each step
        for group in opt.param_groups:
            group["lr"] = hp["lr"] * factor
        grads = _set_grads(model, 100 + t)
        opt.step()
        _oracle_step(oracle, grads, state, t, hp["lr"] * factor, hp)
    for name, p in model.named_parameters():
        # The shared clip computes its norm in float32 (functional.clip_by_global_norm_), so clipped norm
        # parameters agree to float32 precision of the clip factor; everything else to float64 precision.
        clipped = max_grad_norm > 0 and param_role(name) == "norm"
        rtol, atol = (1e-6, 1e-8) if clipped else (1e-10, 1e-12)
        torch.testing.assert_close(p.detach(), oracle[name], rtol=rtol, atol=atol, msg=name)


def test_the_clip_touches_only_the_adamw_part() -> None:
    torch.manual_seed(2)
    base = build_model(CONFIG)
    grad_sequence = [_set_grads(base, step) for step in range(3)]  # the same gradients for both runs
    runs = {}
    for max_grad_norm in (0.0, 1e-4):
        model = copy.deepcopy(base)
        opt = build("adam_mini", model, {"max_grad_norm": max_grad_norm})
        for grads in grad_sequence:
            for n, p in model.named_parameters():
                p.grad = grads[n].clone()
            opt.step()
            for n, p in model.named_parameters():  # the optimizer clips a copy, not p.grad
                assert p.grad is not None and torch.equal(p.grad, grads[n]), n
        runs[max_grad_norm] = dict(model.named_parameters())
    for name, p in runs[0.0].items():
        q = runs[1e-4][name]
        if param_role(name) == "norm":
            assert not torch.equal(p, q), name  # clipped hard: a different update
        else:
            assert torch.equal(p, q), name  # the mini chain is never clipped (Levanter)


# --- state, dtypes, spec ----------------------------------------------------------------------------------


def test_state_dict_round_trip_is_bitwise() -> None:
    torch.manual_seed(3)
    model = build_model(CONFIG)
    hp = {"max_grad_norm": 0.5}
    opt = build("adam_mini", model, hp)
    for step in range(3):
        _set_grads(model, step)
        opt.step()
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    for step in range(3, 6):
        _set_grads(model, step)
        opt.step()

    resumed = build_model(CONFIG)
    resumed.load_state_dict(saved_model)
    resumed_opt = build("adam_mini", resumed, hp)
    resumed_opt.load_state_dict(saved_opt)
    for step in range(3, 6):
        _set_grads(resumed, step)
        resumed_opt.step()
    for (name, p), q in zip(model.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_bf16_params_keep_fp32_state_through_a_round_trip() -> None:
    model = build_model(CONFIG).to(torch.bfloat16)
    opt = build("adam_mini", model)
    _set_grads(model, 0)
    opt.step()
    resumed_opt = build("adam_mini", model)
    resumed_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for p in model.parameters():
        assert torch.isfinite(p).all()
        for key in ("exp_avg", "exp_avg_sq"):
            assert opt.state[p][key].dtype == torch.float32
            assert resumed_opt.state[p][key].dtype == torch.float32
            assert torch.equal(resumed_opt.state[p][key], opt.state[p][key])


def test_missing_n_heads_is_an_error() -> None:
    model = build_model(CONFIG)
    del model.config
    with pytest.raises(ValueError, match="n_heads"):
        build("adam_mini", model)


def test_paper_space_baseline_is_the_papers_130m_best() -> None:
    hp = resolve_hparams(get_spec("adam_mini"), "paper")
    # paper_results.json, optimizer "mini", 130m 1x: lr 8e-3, wd 0.1, betas 0.9/0.98, eps 1e-15, clip 1.
    expected = {"lr": 8e-3, "wd": 0.1, "beta1": 0.9, "beta2": 0.98, "eps": 1e-15, "max_grad_norm": 1.0}
    assert {k: hp[k] for k in expected} == expected
    assert (hp["batch_size"], hp["warmup"]) == (128, 2000)
    # PAPER.md section 3: Adam-mini's grid is AdamW's.
    assert get_spec("adam_mini").spaces["paper"].grid == get_spec("adamw").spaces["paper"].grid
