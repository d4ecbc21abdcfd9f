from __future__ import annotations

import json

import pytest

from sweep_service.cli import main, parse_value


def test_parse_value() -> None:
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("1e-3") == 1e-3
    assert parse_value("true") is True
    assert parse_value("cosine") == "cosine"


def test_train_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--scale", "tiny-130k", "--chinchilla", "0.05", "--set", "warmup=4", "--json", "--quiet"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("final_eval_loss", "initial_eval_loss", "status", "steps", "tokens", "tokens_per_second"):
        assert key in out
    assert out["status"] == "completed" and out["steps"] == 32 and out["tokens"] == 32 * 32 * 128
    assert out["final_eval_loss"] < out["initial_eval_loss"]
    assert out["hparams"]["warmup"] == 4


def test_diverged_json_is_valid_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--scale", "tiny-130k", "--chinchilla", "0.05", "--set", "lr=1000", "--set", "warmup=0"]
    assert main([*args, "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "diverged" and out["final_eval_loss"] == "inf"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale", "7b"], "unknown scale '7b'; valid scales: 130m"),
        (["--scale", "tiny-130k", "--optimizer", "sgd"], "unknown optimizer 'sgd'; valid optimizers: "),
        (["--scale", "tiny-130k", "--set", "lrr=1"], "unknown hyperparameter 'lrr' for optimizer 'adamw'; valid:"),
        (["--scale", "tiny-130k", "--set", "lr"], "--set expects key=value"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
