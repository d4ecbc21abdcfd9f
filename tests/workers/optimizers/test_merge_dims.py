"""Levanter's merge_small_dims (SOAP target 2048, Kron 8192): the grouping rule and how each optimizer uses it."""

from __future__ import annotations

import pytest
import torch

from workers.model import SCALES, build_model
from workers.optimizers import build, get_spec, resolve_hparams
from workers.optimizers._merge_dims import KRON_TARGET, SOAP_TARGET, dim_loss, merge_small_dims
from workers.optimizers.kron import Kron
from workers.optimizers.soap import SOAP


def test_targets_are_levanters() -> None:
    assert (SOAP_TARGET, KRON_TARGET) == (2048, 8192)
    for name, target in (("soap", 2048), ("kron", 8192)):
        hp = resolve_hparams(get_spec(name), "paper")
        assert hp["merge_small_dims"] is True and hp["target_merged_dim_size"] == target


def test_dim_loss_by_hand() -> None:
    assert dim_loss(2048, 2048) == 0
    assert dim_loss(1024, 2048) == pytest.approx(1.0)  # log2(2)
    assert dim_loss(128, 2048) == pytest.approx(4 + 100 * 1)  # below target/8 = 256: + 100 log2(256/128)
    assert dim_loss(4096, 2048) == pytest.approx(10.0)  # 10 log2(2)
    assert dim_loss(32768, 2048) == pytest.approx(40 + 1000 * 1)  # above 8 x 2048: + 1000 log2(2)


@pytest.mark.parametrize(
    ("shape", "target", "merged"),
    [
        ((512, 512), SOAP_TARGET, (512, 512)),  # paper 130m attention: 2 x 2 = 4 beats 70 + 4000 merged
        ((2048, 512), SOAP_TARGET, (2048, 512)),  # paper 130m MLP
        ((512, 2048), KRON_TARGET, (512, 2048)),
        ((64, 64), SOAP_TARGET, (4096,)),  # tiny-130k: 2 x 205 > 10 merged
        ((256, 64), SOAP_TARGET, (16384,)),  # tiny-130k MLP
        ((192, 192), SOAP_TARGET, (192, 192)),  # tiny-1.2m: 36,864 > 8 x 2048 costs 1170
        ((192, 192), KRON_TARGET, (36864,)),  # ... but not for Kron's 8192
        ((128, 512), KRON_TARGET, (65536,)),
        ((64,), SOAP_TARGET, (64,)),  # a vector has nothing to merge
        ((2, 3, 2048, 2048), 2048, (12288, 2048)),  # consecutive dims only
    ],
)
def test_merged_shapes(shape: tuple[int, ...], target: int, merged: tuple[int, ...]) -> None:
    assert merge_small_dims(shape, target, [False] * len(shape))[0] == merged


def test_a_merged_dim_is_null_only_if_all_its_dims_were() -> None:
    assert merge_small_dims((4, 8), 2048, [True, False]) == ((32,), (False,))
    assert merge_small_dims((4, 8), 2048, [True, True]) == ((32,), (True,))
    assert merge_small_dims((128256, 512), 2048, [True, False]) == ((128256, 512), (True, False))


def test_soap_layout_with_and_without_merging() -> None:
    w = torch.zeros(64, 64, requires_grad=True)
    merged = SOAP([w], merge_small_dims=True, block_size=256)
    rotate, regions, matrix = merged.layout(w, merged.param_groups[0])
    assert matrix == (4096, 1) and rotate == (True, False)
    assert [(r.rows, r.r, r.cols, r.c) for r in regions] == [(16, 256, 1, 1)]  # a vector in 256-blocks
    plain = SOAP([w], block_size=256)  # scale_by_soap's default: no merging
    assert plain.layout(w, plain.param_groups[0])[2] == (64, 64)


def test_kron_layout_with_merging_is_one_diagonal_factor() -> None:
    w = torch.zeros(64, 64, requires_grad=True)
    opt = Kron([w], merge_small_dims=True)
    kinds, _, matrix = opt.layout(w, opt.param_groups[0])
    assert kinds == ("diag", "none") and matrix == (4096, 1)
    plain = Kron([w])
    assert plain.layout(w, plain.param_groups[0])[0] == ("tri", "tri")


@pytest.mark.parametrize("name", ["soap", "kron"])
def test_merging_changes_the_tiny_update_and_keeps_shapes(name: str) -> None:
    """On the tiny ladder merging changes the step (issue 14: 'different on the tiny ladder')."""
    results = []
    for merge in (True, False):
        torch.manual_seed(0)
        model = build_model(SCALES["tiny-130k"])
        opt = build(name, model, {"merge_small_dims": merge, "lr": 1e-2})
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        w = model.get_parameter("blocks.0.attn.wq.weight").detach().clone()
        assert w.shape == (64, 64) and torch.isfinite(w).all()
        results.append(w)
    assert not torch.equal(results[0], results[1])
