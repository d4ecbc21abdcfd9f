from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from workers.model import (
    EMBEDDING_STD,
    SCALES,
    Transformer,
    build_model,
    chinchilla_tokens,
    get_scale,
    non_embedding_params,
    param_role,
)

# PAPER.md section 2, the table's last column.
PAPER_N = {"130m": 134_217_728, "300m": 301_989_888, "520m": 536_870_912, "1.2b": 1_207_959_552}


@pytest.mark.parametrize("name", list(PAPER_N))
def test_paper_scales_match_the_table(name: str) -> None:
    cfg = SCALES[name]
    assert non_embedding_params(cfg) == PAPER_N[name]
    assert (cfg.n_layers, cfg.seq_len, cfg.d_ff) == (32, 4096, 4 * cfg.d_model)
    # Count the real model's matrices, built on the meta device (no memory), not just the formula.
    with torch.device("meta"):
        model = build_model(cfg)
    counted = sum(p.numel() for n, p in model.named_parameters() if param_role(n) == "matrix")
    assert counted == PAPER_N[name]


def test_tiny_ladder_spans_8x_and_has_4_presets() -> None:
    tiny = [non_embedding_params(c) for c in SCALES.values() if c.family == "tiny"]
    assert len(tiny) >= 4
    assert max(tiny) / min(tiny) >= 8
    assert tiny == sorted(tiny)


def test_chinchilla_tokens() -> None:
    cfg = SCALES["tiny-130k"]
    assert chinchilla_tokens(cfg, 1) == 20 * 131_072
    assert chinchilla_tokens(cfg, 4) == 4 * 20 * 131_072


def test_forward_shapes_and_loss(tiny_model: torch.nn.Module) -> None:
    idx = torch.randint(0, 256, (3, 16))
    logits = tiny_model(idx)
    assert logits.shape == (3, 16, 256)
    loss = float(tiny_model(idx, idx).detach())
    # Levanter's head (std 0.987/sqrt(d) on unit-RMS features) gives logits of std ~1 at init, so the loss is
    # about ln 256 + var/2 = 5.545 + ~0.49 rather than ln 256 (GPT-2's N(0, 0.02) head gives ~ln 256).
    assert 5.6 < loss < 6.3
    dataclass_cfg = dataclasses.replace(SCALES["tiny-130k"], init="gpt2")
    torch.manual_seed(0)
    assert abs(float(build_model(dataclass_cfg)(idx, idx).detach()) - 5.545) < 0.2


def test_causal(tiny_model: torch.nn.Module) -> None:
    idx = torch.randint(0, 256, (1, 12))
    changed = idx.clone()
    changed[0, 8] = (changed[0, 8] + 1) % 256
    a, b = tiny_model(idx), tiny_model(changed)
    assert torch.equal(a[:, :8], b[:, :8])
    assert not torch.equal(a[:, 8:], b[:, 8:])


def test_llama_shape_no_biases_untied(tiny_model: Transformer) -> None:
    names = [n for n, _ in tiny_model.named_parameters()]
    assert not any(n.endswith("bias") for n in names)
    assert tiny_model.tok_emb.weight.data_ptr() != tiny_model.lm_head.weight.data_ptr()
    roles = {n: param_role(n) for n in names}
    assert roles["tok_emb.weight"] == "embedding" and roles["lm_head.weight"] == "head"
    assert roles["norm_f.weight"] == "norm" and roles["blocks.0.attn.wq.weight"] == "matrix"


def test_unknown_scale_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"valid scales: 130m, 300m"):
        get_scale("7b")


# The std of a standard normal truncated to [-3, 3]: sqrt(1 - 2 x 3 phi(3) / (Phi(3) - Phi(-3))) = 0.98658.
TRUNC_STD = math.sqrt(1 - 6 * math.exp(-4.5) / math.sqrt(2 * math.pi) / math.erf(3 / math.sqrt(2)))


def test_levanter_init_statistics_per_matrix() -> None:
    """Every Linear (hidden matrices and the head): std x sqrt(fan_in) = 0.9866, |W| x sqrt(fan_in) <= 3, no
    residual scaling (wo, w2 as the rest); the embedding N(0, 0.02) untruncated; norm gains ones."""
    assert abs(TRUNC_STD - 0.98658) < 1e-5
    torch.manual_seed(0)
    model = build_model(SCALES["tiny-1.2m"])
    assert model.config.init == "levanter"
    checked = 0
    for name, p in model.named_parameters():
        w = p.detach().double()
        role = param_role(name)
        if role in ("matrix", "head"):
            fan_in = p.shape[1]
            scaled = w * math.sqrt(fan_in)
            # 192 x 192 .. 256 x 192 entries: the std's sampling error is < 1.3%; 4% leaves room.
            assert float(scaled.std()) == pytest.approx(TRUNC_STD, rel=0.04), name
            assert float(scaled.abs().max()) <= 3.0 + 1e-6, name
            assert float(scaled.abs().max()) > 2.5, name  # truncated at 3, not clipped narrower
            assert abs(float(scaled.mean())) < 0.02, name
            checked += 1
        elif role == "embedding":
            assert float(w.std()) == pytest.approx(EMBEDDING_STD, rel=0.04)
            assert float(w.abs().max()) > 3 * EMBEDDING_STD  # a plain normal: 49k draws pass 3 sigma
        else:
            assert torch.equal(p, torch.ones_like(p)), name
    assert checked == 2 * 7 + 1  # 2 blocks x (q, k, v, o, w1, w2, w3) + lm_head


def test_gpt2_init_is_kept_for_comparisons() -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(SCALES["tiny-1.2m"], init="gpt2")
    model = build_model(cfg)
    stds = {n: float(p.detach().std()) for n, p in model.named_parameters() if p.ndim == 2}
    assert stds["blocks.0.attn.wq.weight"] == pytest.approx(0.02, rel=0.05)
    assert stds["lm_head.weight"] == pytest.approx(0.02, rel=0.05)
    assert stds["blocks.1.mlp.w2.weight"] == pytest.approx(0.02 / math.sqrt(2 * cfg.n_layers), rel=0.05)


def test_unknown_init_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown init 'xavier'; valid: levanter, gpt2"):
        dataclasses.replace(SCALES["tiny-130k"], init="xavier")
