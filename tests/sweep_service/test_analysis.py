"""Tests of sweep_service.analysis, the public facade (DESIGN.md "Interfaces that others build on"): it re-exports
the topic modules unchanged. The analyses themselves are tested where they live: test_ranking.py (best_per_cell,
sensitivity, stable_hparams), test_speedups.py (fit_loss_vs_data, estimate_speedup, speedups), test_scaling.py."""

from __future__ import annotations

from types import ModuleType

from sweep_service import analysis, bootstrap, ranking, scaling, speedups

TOPICS: tuple[ModuleType, ...] = (ranking, speedups, scaling, bootstrap)


def test_every_public_name_is_the_topic_modules_own() -> None:
    for name in analysis.__all__:
        owners = [m for m in TOPICS if hasattr(m, name)]
        assert owners, f"{name} is in no topic module"
        assert all(getattr(m, name) is getattr(analysis, name) for m in owners), name


def test_the_documented_interface_and_what_callers_name() -> None:
    # DESIGN.md's list, then what the API, the CLI, report.py, answer.py, phases.py and issue 12 name.
    names = {"fit_loss_vs_data", "estimate_speedup", "fit_hparam_scaling", "sensitivity", "best_per_cell"}
    names |= {"speedups", "stable_hparams", "check_trials", "config_key", "snap_to_grid", "predict_hparam"}
    names |= {"HparamPrediction", "ScalingFit", "LossFit", "N_BOOT", "NEAR_TIE_TOLERANCE", "LOSS_FIT_PARAMS"}
    assert names <= set(analysis.__all__)
    assert all(callable(getattr(analysis, n)) for n in names if n[0].islower())
