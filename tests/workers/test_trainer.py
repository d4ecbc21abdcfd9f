from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from workers.trainer import DivergenceRule, RunConfig, resolve_device, train

# A short run: 0.1x Chinchilla of tiny-130k is 64 steps; warmup must fit inside it.
SHORT = {"warmup": 8}


def test_same_seed_is_bitwise_reproducible() -> None:
    cfg = RunConfig(scale="tiny-130k", chinchilla=0.1, hparams=SHORT, seed=3, max_steps=20, eval_every=5)
    a, b = train(cfg), train(cfg)
    assert a.curve == b.curve  # exact float equality, every evaluation
    other = train(RunConfig(scale="tiny-130k", chinchilla=0.1, hparams=SHORT, seed=4, max_steps=20, eval_every=5))
    assert other.curve[-1] != a.curve[-1]


def test_resume_from_checkpoint_ends_at_the_same_loss(tmp_path: Path) -> None:
    base = {"scale": "tiny-130k", "chinchilla": 0.1, "hparams": SHORT, "seed": 1, "eval_every": 16}
    uninterrupted = train(RunConfig(**base))  # type: ignore[arg-type]
    # Interrupt after 24 steps (the checkpoint at step 20 stays), then resume to the end.
    ckpt = str(tmp_path)
    first = train(RunConfig(**base, checkpoint_dir=ckpt, checkpoint_every=10, max_steps=24))  # type: ignore[arg-type]
    assert first.steps == 24 and (tmp_path / "checkpoint.pt").exists()
    resumed = train(RunConfig(**base, checkpoint_dir=ckpt, checkpoint_every=10))  # type: ignore[arg-type]
    assert resumed.steps == uninterrupted.steps == 64
    assert resumed.final_eval_loss == uninterrupted.final_eval_loss
    assert resumed.curve == uninterrupted.curve


def test_absurd_learning_rate_diverges_quickly_with_the_result_recorded() -> None:
    result = train(RunConfig(scale="tiny-130k", chinchilla=1.0, hparams={"lr": 1e3, "warmup": 0}))
    assert result.status == "diverged"
    assert result.final_eval_loss == math.inf
    assert result.diverged_step is not None and result.diverged_step < 50
    assert result.reason and "step" in result.reason
    assert math.isfinite(result.initial_eval_loss) and result.total_steps == 640


def test_late_divergence_rule() -> None:
    rule = DivergenceRule(max_loss=1e4, late_loss=6.0, late_step=2000)  # the paper's rule
    assert rule.check(1999, 7.0) is None
    assert rule.check(2000, 6.0) is not None
    assert rule.check(5, float("nan")) is not None
    assert rule.check(5, 2e4) is not None


def test_gradient_accumulation_matches_the_full_batch() -> None:
    full = train(RunConfig(scale="tiny-130k", chinchilla=0.1, hparams=SHORT, max_steps=10, eval_every=10))
    accum = train(
        RunConfig(scale="tiny-130k", chinchilla=0.1, hparams=SHORT, max_steps=10, eval_every=10, micro_batch_size=8)
    )
    # Same batch, summed in a different order: equal up to float rounding.
    assert accum.final_eval_loss == pytest.approx(full.final_eval_loss, abs=2e-3)


def test_configuration_errors_raise_before_training() -> None:
    with pytest.raises(ValueError, match="warmup 100 is not less"):
        train(RunConfig(scale="tiny-130k", chinchilla=0.01, hparams={"warmup": 100}))
    with pytest.raises(ValueError, match="micro_batch_size"):
        train(RunConfig(scale="tiny-130k", chinchilla=0.1, hparams=SHORT, micro_batch_size=5))
    with pytest.raises(ValueError, match="unknown hyperparameter 'momentum'"):
        train(RunConfig(scale="tiny-130k", hparams={"momentum": 0.9}))


@pytest.mark.slow
def test_real_run_at_1x_chinchilla_lowers_eval_loss_by_40_percent() -> None:
    result = train(RunConfig(scale="tiny-130k", chinchilla=1.0))
    assert result.status == "completed"
    assert result.steps == result.total_steps == 640
    assert result.tokens == 640 * 32 * 128
    assert result.final_eval_loss <= 0.6 * result.initial_eval_loss
    assert result.tokens_per_second > 0
    assert result.info["data"]["sha256"] and result.info["torch"]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"chinchilla": 0.0}, "chinchilla must be a finite number > 0, got 0"),
        ({"chinchilla": -1.0}, "chinchilla must be a finite number > 0, got -1"),
        ({"chinchilla": math.nan}, "chinchilla must be a finite number > 0, got nan"),
        ({"threads": 0}, "threads must be at least 1, got 0"),
        ({"max_steps": 0}, "max_steps must be at least 1, got 0"),
        ({"micro_batch_size": 0}, "micro_batch_size must be at least 1, got 0"),
        ({"eval_every": -1}, "eval_every must be >= 0"),
        ({"checkpoint_every": 5}, "checkpoint_every needs a checkpoint_dir"),
        ({"device": "tpu"}, "unknown device 'tpu'; valid: auto, cpu, cuda, cuda:N, mps"),
        ({"hparams": {"lr": "abc"}}, "hyperparameter lr='abc': expected a float"),
        ({"hparams": {"batch_size": "abc"}}, "hyperparameter batch_size='abc': expected an integer"),
        ({"hparams": {"warmup": 2, "init": "xavier"}}, "unknown init 'xavier'; valid: levanter, gpt2"),
    ],
)
def test_unusable_configs_raise_a_value_error_naming_the_field(changes: dict[str, Any], words: str) -> None:
    config = dataclasses.replace(RunConfig(scale="tiny-130k", chinchilla=0.02, hparams={"warmup": 2}), **changes)
    with pytest.raises(ValueError, match=re.escape(words)):
        train(config)


def test_init_hyperparameter_reaches_the_model() -> None:
    """The model starts as `init` says: Levanter's head gives logits of std ~1 (initial loss ~ln 256 + 0.5),
    GPT-2's N(0, 0.02) head near-uniform predictions (~ln 256 = 5.545)."""
    runs = {
        init: train(RunConfig(scale="tiny-130k", chinchilla=0.02, hparams={"warmup": 2, "init": init}, max_steps=1))
        for init in ("levanter", "gpt2")
    }
    assert runs["levanter"].hparams["init"] == "levanter"
    assert runs["levanter"].initial_eval_loss > 5.7
    assert abs(runs["gpt2"].initial_eval_loss - math.log(256)) < 0.1


def test_a_checkpoint_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    config = RunConfig(scale="tiny-130k", chinchilla=0.02, hparams={"warmup": 2}, checkpoint_dir=str(a_file))
    with pytest.raises(ValueError, match="is a file, not a directory"):
        train(config)


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:", "cuda:x", "cuda:²", "CPU", "MPS"):
        with pytest.raises(ValueError, match="valid: auto, cpu, cuda, cuda:N, mps"):
            resolve_device(bad)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'mps': not available"):
        resolve_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ValueError, match=r"CUDA is not available \(this torch build has no CUDA"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    with pytest.raises(ValueError, match=r"CUDA is not available \(no CUDA device is visible"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match="'cuda:2': no such CUDA device; visible: cuda:0, cuda:1"):
        resolve_device("cuda:2")
