"""Sophia-H as the paper ran it: Levanter's `SophiaHConfig` (OPTIMIZERS.md 3.11), Hutchinson's estimator.

Rule (g the gradient, t the 1-based step, H the Hessian of the training loss):
    m = b1 m + (1-b1) g
    every `update_interval` steps: h <- b2 h + (1-b2) (z * Hz),   z ~ N(0, I)
    u = clip(m_hat / max(gamma h, eps), -1, 1)          (m_hat = m / (1 - b1^t); h has no bias correction)
    theta <- theta - lr (u + wd theta)                  (decay after the clip, Levanter's Algorithm 3 note)
The optimizer owns the random generator of the probes z (seeded, saved in the state dict) and implements
`HessianOptimizer`: on the steps where `hessian_due()` is True the trainer computes the gradients with
`create_graph=True` (attention on the MATH backend: the fused kernels lack double backward, OPTIMIZERS.md 8)
and calls `update_hessian(grads)`, which takes Hz = d(sum_i g_i z_i)/dtheta as one vector-Jacobian product.

Schedule, Levanter's (`_sophia_gradient_transform`: the update is computed from the old h, then the count
advances and, when it is a multiple of k, h takes the HVP at the pre-update parameters and this step's batch):
the HVP is due on steps k, 2k, 3k, ... (k = update_interval, 1-based steps) and counts from the next step on.
So the first k - 1 steps (h = 0) move every coordinate by lr sign(m_hat), and step k too. The Sophia paper's
Algorithm 3 ("t mod k = 1") would fold the estimate in before the step instead; the paper ran Levanter's.
The trainer takes the HVP before calling step() (it needs the step's gradient graph), so `update_hessian` folds
the estimate into h at once and keeps the previous h for that one step() (`hessian_before`, dropped by step()).
Gradient clipping by global norm is the trainer's (the paper's sweep sets max_grad_norm 1 for Sophia); the
HVP uses the unclipped loss, as Levanter's, which differentiates the objective itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from workers.optimizers import _cpu_kernels as cpu_kernels
from workers.optimizers.base import HParams, OptimizerSpec, SearchSpace, decay_param_groups
from workers.optimizers.functional import restore_state_dtypes, state_dtype_grad, state_zeros

# Levanter BaseSophiaConfig: clip_threshold 1.0 (elementwise clip of u) and rng_seed 0 (OPTIMIZERS.md 3.11).
CLIP_THRESHOLD = 1.0
HUTCHINSON_SEED = 0


def _state_dtype(p: torch.Tensor) -> torch.dtype:
    # float32 state, float64 for float64 parameters (workers/optimizers/functional.py convention)
    return torch.float64 if p.dtype == torch.float64 else torch.float32


class SophiaH(torch.optim.Optimizer):
    """Sophia with a Hutchinson estimate of the Hessian diagonal; see the module docstring for the rule."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        beta1: float,
        beta2: float,
        gamma: float,
        eps: float,
        weight_decay: float = 0.0,
        update_interval: int = 10,
        seed: int = HUTCHINSON_SEED,
    ) -> None:
        if update_interval < 1:
            raise ValueError(f"update_interval must be >= 1, got {update_interval}")
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")  # the step divides by it
        defaults = {
            "lr": lr,
            "beta1": beta1,
            "beta2": beta2,
            "gamma": gamma,
            "eps": eps,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)
        self.update_interval = update_interval
        self.steps_done = 0  # completed step() calls: the bias correction and the HVP schedule count these
        self.hessian_updates = 0
        self._stashed = False  # some state holds a `hessian_before` for the next step()
        device = self.param_groups[0]["params"][0].device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    # --- HessianOptimizer -------------------------------------------------------------------------------

    def hessian_due(self) -> bool:
        """True on steps k, 2k, 3k, ... (1-based; asked before the step: `steps_done` counts the completed ones)."""
        return (self.steps_done + 1) % self.update_interval == 0

    def hessian_params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def update_hessian(self, grads: list[torch.Tensor]) -> None:
        """h <- b2 h + (1-b2) z * Hz with fresh probes z ~ N(0, I); `grads` carry a graph (create_graph=True).

        The next step() still divides by the h from before this call (Levanter's order, see the module docstring).
        """
        params = self.hessian_params()
        if len(grads) != len(params):
            raise ValueError(f"update_hessian: {len(grads)} gradients for {len(params)} hessian_params()")
        # One probe per parameter, drawn in parameter order in the state dtype, then cast to the gradient's
        # dtype for the product (bf16 models); the estimate uses the probe actually applied.
        probes = [
            torch.randn(p.shape, generator=self.generator, device=p.device, dtype=_state_dtype(p)).to(g.dtype)
            for p, g in zip(params, grads, strict=True)
        ]
        # A gradient without a graph does not depend on the parameters: its rows of H are zero.
        live = [i for i, g in enumerate(grads) if g.requires_grad]
        products: list[torch.Tensor | None] = [None] * len(params)
        if live:
            hvps = torch.autograd.grad(
                [grads[i] for i in live],
                [params[i] for i in live],
                grad_outputs=[probes[i] for i in live],
                allow_unused=True,
            )
            for i, product in zip(live, hvps, strict=True):
                products[i] = product
        with torch.no_grad():
            index = 0
            for group in self.param_groups:
                beta2 = group["beta2"]
                for p in group["params"]:
                    state = self._state(p)
                    hz = products[index]
                    z = probes[index]
                    index += 1
                    h = state["hessian"]
                    if "hessian_before" not in state:  # a second call before step(): keep the oldest
                        state["hessian_before"] = h.clone()
                        self._stashed = True
                    h.mul_(beta2)
                    if hz is not None:
                        h.addcmul_(z.to(h.dtype), hz.to(h.dtype), value=1 - beta2)
        self.hessian_updates += 1

    # --- the step ---------------------------------------------------------------------------------------

    def _state(self, p: torch.Tensor) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            state["exp_avg"] = state_zeros(p)
            state["hessian"] = state_zeros(p)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        t = self.steps_done + 1
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, wd, beta1 = group["lr"], group["weight_decay"], group["beta1"]
            states = [self._state(p) for p in params]
            grads = [state_dtype_grad(p) for p in params]
            moments = [s["exp_avg"] for s in states]
            # u = clip(m_hat / max(gamma h, eps), -1, 1) with m_hat = m / (1 - b1^t). With c = (1 - b1^t) gamma this
            # is clip(m / max(h, eps / gamma), -c, c) / c (clip(x / c, -1, 1) = clip(x, -c, c) / c for c > 0), so
            # the scale folds into the final step's alpha: two passes over the state fewer than the literal form.
            c = (1 - beta1**t) * group["gamma"]
            # The h this step divides by: the one from before an HVP taken for this step (Levanter's order).
            hessians = [s.pop("hessian_before", s["hessian"]) for s in states]
            kernels = cpu_kernels.kernels_for(params, grads, moments, hessians)
            if kernels is not None:  # the same step in one pass (float32 CPU tensors); the lerp is in it
                kernels.sophia_step(
                    params, grads, moments, hessians, beta1, group["eps"] / group["gamma"], CLIP_THRESHOLD * c, lr,
                    wd, lr / c,
                )  # fmt: skip
                continue
            torch._foreach_lerp_(moments, grads, 1 - beta1)
            denoms = torch._foreach_clamp_min(hessians, group["eps"] / group["gamma"])
            updates = torch._foreach_div(moments, denoms)
            torch._foreach_clamp_min_(updates, -CLIP_THRESHOLD * c)
            torch._foreach_clamp_max_(updates, CLIP_THRESHOLD * c)
            if wd != 0:
                torch._foreach_mul_(params, 1 - lr * wd)
            # bf16 parameters with fp32 state: apply the update in the parameter dtype.
            steps = [u if u.dtype == p.dtype else u.to(p.dtype) for p, u in zip(params, updates, strict=True)]
            torch._foreach_add_(params, steps, alpha=-lr / c)
        if self._stashed:  # a param without a gradient this step does not keep its stash either
            for p in self.hessian_params():
                self.state[p].pop("hessian_before", None)
            self._stashed = False
        self.steps_done = t
        return loss

    # --- checkpointing ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state_dict = super().state_dict()
        state_dict["sophia"] = {
            "steps_done": self.steps_done,
            "hessian_updates": self.hessian_updates,
            "update_interval": self.update_interval,
            "rng_state": self.generator.get_state(),
        }
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        restore_state_dtypes(self, state_dict)  # fp32 state for bf16 parameters, as saved
        extra = state_dict["sophia"]
        self.steps_done = int(extra["steps_done"])
        self.hessian_updates = int(extra["hessian_updates"])
        self.update_interval = int(extra["update_interval"])
        self.generator.set_state(extra["rng_state"].clone())


def build(model: nn.Module, hp: HParams) -> torch.optim.Optimizer:
    return SophiaH(
        decay_param_groups(model, float(hp["wd"])),
        lr=float(hp["lr"]),
        beta1=float(hp["beta1"]),
        beta2=float(hp["beta2"]),
        gamma=float(hp["gamma"]),
        eps=float(hp["eps"]),
        update_interval=int(hp["update_interval"]),
    )


# PAPER.md section 3 (Sophia-H Phase I grid) with the paper's 130m 1x best as baseline (OPTIMIZERS.md 1,
# ../shared/data/paper_results.json: lr 4e-3, wd 0, warmup 4000, betas 0.95/0.9, gamma 0.0125, eps 1e-7,
# batch 128, max_grad_norm 1 in every Sophia cell, so fixed).
PAPER_SPACE = SearchSpace(
    grid={
        "lr": (2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2),
        "wd": (0.0, 0.1, 0.2, 0.3),
        "warmup": (500, 1000, 2000, 4000),
        "beta1": (0.8, 0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98, 0.99, 0.995),
        "gamma": (0.00625, 0.0125, 0.025, 0.05),
        "eps": (1e-17, 1e-12, 1e-7),
        "batch_size": (128, 256, 512, 1024),
    },
    baseline={
        "lr": 4e-3,
        "wd": 0.0,
        "warmup": 4000,
        "beta1": 0.95,
        "beta2": 0.9,
        "gamma": 0.0125,
        "eps": 1e-7,
        "batch_size": 128,
    },
    fixed={"min_lr_ratio": 0.0, "max_grad_norm": 1.0, "update_interval": 10},
)

# Same hyperparameters and number of values for tiny CPU runs (~640 steps of 32 x 128 tokens): lr doublings
# with the baseline second of five, as in the paper's grid; warmups and batches as AdamW's tiny grid.
# Calibration on tiny-130k (chinchilla 0.25, 160 steps, other values at this baseline): lr 1.5e-3 / 3e-3 /
# 6e-3 / 1.2e-2 / 2.4e-2 reached eval loss 2.691 / 2.605 / 2.768 / 2.889 / 2.806 (AdamW's baseline: 2.465).
TINY_SPACE = SearchSpace(
    grid={
        "lr": (1.5e-3, 3e-3, 6e-3, 1.2e-2, 2.4e-2),
        "wd": (0.0, 0.1, 0.2, 0.3),
        "warmup": (16, 32, 64, 128),
        "beta1": (0.8, 0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98, 0.99, 0.995),
        "gamma": (0.00625, 0.0125, 0.025, 0.05),
        "eps": (1e-17, 1e-12, 1e-7),
        "batch_size": (16, 32, 64, 128),
    },
    baseline={
        "lr": 3e-3,
        "wd": 0.0,
        "warmup": 64,
        "beta1": 0.95,
        "beta2": 0.9,
        "gamma": 0.0125,
        "eps": 1e-7,
        "batch_size": 32,
    },
    fixed={"min_lr_ratio": 0.0, "max_grad_norm": 1.0, "update_interval": 10},
)

SPEC = OptimizerSpec(
    name="sophia",
    build=build,
    # Levanter SophiaHConfig defaults (OPTIMIZERS.md 3.11) where the search space gives no baseline:
    # wd 0.1, betas 0.96/0.99, eps 1e-12, gamma 0.01 (GAMMA_SOPHIA_H), update_interval 10.
    defaults={"wd": 0.1, "beta1": 0.96, "beta2": 0.99, "gamma": 0.01, "eps": 1e-12, "update_interval": 10},
    spaces={"paper": PAPER_SPACE, "tiny": TINY_SPACE},
    routing=(
        "all parameters: Sophia-H (Hutchinson HVP every update_interval steps, elementwise clip at 1); "
        "decayed: hidden matrices and lm_head; not decayed: embedding, norms; grads clipped by the trainer"
    ),
    clips_itself=False,
    reference="Levanter SophiaHConfig (stanford-crfm/levanter src/levanter/optim/sophia.py)",
    cpu_kernels=True,
)
