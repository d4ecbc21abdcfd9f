"""sweep_service.catalog answers scale and optimizer facts without torch, and agrees with the registries the
trainer uses (workers.model.SCALES, workers.optimizers.REGISTRY)."""

from __future__ import annotations

import subprocess
import sys

from sweep_service import catalog


def test_the_catalog_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from sweep_service import catalog\n"
        "catalog.optimizer_names(); catalog.scale_params(); catalog.family_of('x', 2e8)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_optimizer_names_are_the_registry() -> None:
    from workers.optimizers import REGISTRY

    assert catalog.optimizer_names() == tuple(REGISTRY)
    assert len(catalog.optimizer_names()) == 13  # OPTIMIZERS.md: the paper's 11 and the two follow-ups


def test_scales_are_the_models() -> None:
    from workers import model

    assert catalog.SCALES is model.SCALES
    assert catalog.scale_params()["130m"] == 32 * (3 * 512 * 2048 + 4 * 512 * 512)  # PAPER.md section 2: 134M
    assert catalog.scale_families()["tiny-130k"] == ("tiny", catalog.scale_params()["tiny-130k"])


def test_family_of_an_unknown_scale_is_the_nearest_preset_in_log_space() -> None:
    assert catalog.family_of("130m", 0.0) == "paper"
    assert catalog.family_of("imported-1b", 1.0e9) == "paper"
    assert catalog.family_of("imported-100k", 1.0e5) == "tiny"
    assert catalog.family_of("imported", float("nan")) is None
