from __future__ import annotations

import pytest
import torch

from workers.model import (
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
    loss = tiny_model(idx, idx)
    # An untrained model predicts roughly uniformly over 256 bytes: loss near ln 256 = 5.545.
    assert abs(float(loss.detach()) - 5.545) < 0.2


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
