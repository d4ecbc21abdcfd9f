"""The catalog: registered optimizers (defaults, routing, schedule, default search spaces) and model scales.

Read from workers.optimizers.REGISTRY and workers.model.SCALES, the same registries the trainer uses, so the
catalog cannot drift from what runs.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from api.deps import Guarded
from api.schemas import OptimizerOut, ScaleOut, SearchSpaceOut

router = APIRouter(tags=["catalog"], dependencies=Guarded)


def _optimizer(name: str) -> OptimizerOut:
    from workers.optimizers import REGISTRY, resolve_hparams
    from workers.optimizers.base import TRAINER_DEFAULTS

    spec = REGISTRY[name]
    return OptimizerOut(
        name=spec.name,
        routing=spec.routing,
        schedule=spec.schedule,
        clips_itself=spec.clips_itself,
        reference=spec.reference,
        defaults=dict(spec.defaults),
        hparams={family: resolve_hparams(spec, family) for family in TRAINER_DEFAULTS},
        spaces={
            family: SearchSpaceOut(
                grid={k: list(v) for k, v in space.grid.items()},
                baseline=dict(space.baseline),
                fixed=dict(space.fixed),
            )
            for family, space in spec.spaces.items()
        },
    )


def _scale(name: str) -> ScaleOut:
    from workers.model import SCALES, chinchilla_tokens, non_embedding_params

    cfg = SCALES[name]
    return ScaleOut(
        name=name,
        family=cfg.family,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_ff=cfg.d_ff,
        seq_len=cfg.seq_len,
        vocab_size=cfg.vocab_size,
        non_embedding_params=non_embedding_params(cfg),
        tokens_at_1x_chinchilla=chinchilla_tokens(cfg, 1.0),
    )


@router.get("/optimizers", response_model=list[OptimizerOut])
def list_optimizers() -> list[OptimizerOut]:
    """Every registered optimizer with its defaults and default search spaces (paper and tiny)."""
    from workers.optimizers import REGISTRY

    return [_optimizer(name) for name in REGISTRY]


@router.get("/optimizers/{name}", response_model=OptimizerOut)
def get_optimizer(name: str) -> OptimizerOut:
    from workers.optimizers import REGISTRY

    if name not in REGISTRY:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"unknown optimizer {name[:100]!r}; valid: {', '.join(REGISTRY)}"
        )
    return _optimizer(name)


@router.get("/scales", response_model=list[ScaleOut])
def list_scales() -> list[ScaleOut]:
    """Every model scale preset with its shape and non-embedding parameter count."""
    from workers.model import SCALES

    return [_scale(name) for name in SCALES]


@router.get("/scales/{name}", response_model=ScaleOut)
def get_scale(name: str) -> ScaleOut:
    from workers.model import SCALES

    if name not in SCALES:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"unknown scale {name[:100]!r}; valid: {', '.join(SCALES)}"
        )
    return _scale(name)
