from __future__ import annotations

import math
from pathlib import Path

import pytest

from sweep_service.spec import SpecError, cell_key, load_spec_file, plan_document

BASE = {"name": "t", "optimizers": ["adamw"], "scales": ["tiny-130k"], "chinchilla": [1]}


def test_cells_are_the_product_of_optimizers_scales_and_multiples() -> None:
    plan = plan_document({**BASE, "scales": ["tiny-130k", "tiny-300k"], "chinchilla": [1, 2]})
    assert [c.key for c in plan.cells] == [
        "adamw/tiny-130k/1",
        "adamw/tiny-130k/2",
        "adamw/tiny-300k/1",
        "adamw/tiny-300k/2",
    ]
    space = plan.cells[0].space
    assert space.grid["lr"] == (3e-3, 6e-3, 1.2e-2, 2.4e-2)  # the registry's tiny space by default
    assert plan.strategy == "coordinate_descent" and plan.tolerance == 3e-3


def test_overrides_tune_and_yaml_numbers(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: t\noptimizers: [adamw]\nscales: [tiny-130k]\n"
        "search:\n  adamw:\n    tune: [lr, wd]\n    grid: {lr: [1e-3, 2e-3]}\n    baseline: {lr: 1e-3}\n"
        "    fixed: {warmup: 4}\n"
    )
    space = plan_document(load_spec_file(path)).cells[0].space
    assert space.grid == {"lr": (1e-3, 2e-3), "wd": (0.0, 0.1, 0.2)}  # 1e-3 is a number, not the string "1e-3"
    assert space.baseline == {"lr": 1e-3, "wd": 0.1}
    assert space.fixed["warmup"] == 4 and space.fixed["beta2"] == 0.98  # not tuned: held at the baseline


def test_explicit_cells_with_baseline_from() -> None:
    doc = {
        **BASE,
        "cells": [{"optimizer": "adamw", "scale": "tiny-300k", "chinchilla": 1, "baseline_from": "adamw/tiny-130k/1"}],
    }
    plan = plan_document(doc)
    assert plan.cells[-1].baseline_from == cell_key("adamw", "tiny-130k", 1)


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        ({**BASE, "optimizers": ["adamx"]}, "optimizers.0", "valid: "),
        ({**BASE, "scales": ["7b"]}, "scales.0", "valid: "),
        ({**BASE, "strategy": "bayes"}, "strategy", "coordinate_descent"),
        ({**BASE, "budget": 0}, "budget", "greater than or equal"),
        ({**BASE, "chinchilla": [0]}, "chinchilla", "positive"),
        ({**BASE, "colour": "red"}, "colour", "Extra inputs"),
        ({"name": "t"}, "spec", "optimizers"),
        ({**BASE, "search": {"adamw": {"grid": {"lrr": [1]}}}}, "search.adamw", "unknown hyperparameters"),
        ({**BASE, "search": {"adamw": {"baseline": {"lr": 5}}}}, "search.adamw.baseline.lr", "not in the grid"),
        ({**BASE, "search": {"adamw": {"tune": ["momentum"]}}}, "search.adamw.tune", "no grid"),
        # Values of the wrong type for their hyperparameter (the trainer would reject every such trial).
        ({**BASE, "search": {"adamw": {"grid": {"warmup": [4, 2.5]}}}}, "search.adamw.grid.warmup", "an integer"),
        ({**BASE, "search": {"adamw": {"fixed": {"lr": "fast"}}}}, "search.adamw.fixed.lr", "a float"),
        ({**BASE, "search": {"adamw": {"grid": {"lr": [math.nan, 0.01]}}}}, "search.adamw.grid.lr", "a finite float"),
        (  # a search section used only by explicit cells is still named as itself
            {
                "name": "t",
                "cells": [{"optimizer": "adamw", "scale": "tiny-130k", "chinchilla": 1}],
                "search": {"adamw": {"grid": {"warmup": [2.5]}}},
            },
            "search.adamw.grid.warmup",
            "an integer",
        ),
        ({**BASE, "search": {"adamw": {"baseline": {"lr": True}}}}, "search.adamw.baseline.lr", "a float"),
        (
            {**BASE, "cells": [{"optimizer": "adamw", "scale": "tiny-130k", "chinchilla": 2, "baseline": {"wd": "x"}}]},
            "cells.0.baseline.wd",
            "a float",
        ),
        (
            {**BASE, "cells": [{"optimizer": "adamw", "scale": "tiny-130k", "chinchilla": 2, "baseline": {"wdd": 1}}]},
            "cells.0.baseline",
            "unknown hyperparameters",
        ),
        (
            {
                **BASE,
                "cells": [{"optimizer": "adamw", "scale": "tiny-130k", "chinchilla": 2, "baseline_from": "x/y/1"}],
            },
            "cells.0.baseline_from",
            "no cell",
        ),
    ],
)
def test_errors_name_the_field(doc: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        plan_document(doc)
    fields = [loc for loc, _ in info.value.errors]
    assert any(loc.startswith(field) for loc in fields), info.value.errors
    assert words in str(info.value)


def test_spec_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        load_spec_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec_file(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec_file(listy)


def test_spec_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="is a directory, not a spec file"):
        load_spec_file(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load_spec_file(bad)
    assert "\n" not in str(info.value)
    assert str(info.value).endswith(
        "not valid YAML/JSON: expected ',' or ']', but got '<stream end>' at line 2, column 1"
    )
