from __future__ import annotations

import numpy as np
import pytest

from workers.optimizers import get_spec, resolve_hparams
from workers.optimizers.base import HParam, HParamTypeError, check_hparam_type


@pytest.mark.parametrize(
    ("value", "default"),
    [
        (1, 0.1),
        (1e-3, 0.1),
        (4, 5),
        (4.0, 5),
        (10**30, 5),
        (np.int64(4), 5),
        (np.float32(0.5), 0.1),
        (True, False),
        (0, True),
        ("x", "y"),
    ],
)
def test_values_of_the_defaults_type_are_accepted(value: HParam, default: HParam) -> None:
    check_hparam_type("h", value, default)


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [
        ("abc", 0.1, "a float"),
        (True, 0.1, "a float"),  # lr=true is a typo, not 1.0
        (float("inf"), 0.1, "a finite float"),
        (float("nan"), 0.1, "a finite float"),
        (float("inf"), 5, "an integer"),
        ("abc", 5, "an integer"),
        (2.5, 5, "an integer"),
        (False, 5, "an integer"),
        (2, True, "true or false"),
        ("yes", True, "true or false"),
        (1, "cosine", "a string"),
    ],
)
def test_values_of_another_type_name_the_hyperparameter(value: HParam, default: HParam, expected: str) -> None:
    with pytest.raises(HParamTypeError) as info:
        check_hparam_type("h", value, default)
    assert (info.value.name, info.value.value, info.value.expected) == ("h", value, expected)
    assert str(info.value) == f"hyperparameter h={value!r}: expected {expected}"


def test_resolve_hparams_checks_override_types() -> None:
    spec = get_spec("adamw")
    assert resolve_hparams(spec, "tiny", {"lr": 1, "warmup": 2.0})["lr"] == 1
    with pytest.raises(ValueError, match=r"hyperparameter warmup='abc': expected an integer"):
        resolve_hparams(spec, "tiny", {"warmup": "abc"})
