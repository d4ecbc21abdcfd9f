"""Adam-mini as the paper ran it: Levanter's `MiniConfig` (OPTIMIZERS.md 3.6).

Rule for a "mini" parameter, with its rows split into blocks (g_B: the gradient entries of block B):
    m = b1 m + (1-b1) g                      (per element, as Adam)
    v_B = b2 v_B + (1-b2) mean(g_B^2)        (ONE scalar per block)
    theta <- theta - lr (m_hat / (sqrt(v_B_hat) + eps) + wd theta)
Blocks follow Levanter's mean axes (OPTIMIZERS.md 3.6): wq and wk one block per attention head (our (d, d)
weights hold n_heads contiguous blocks of head_dim output rows); wv, wo, the MLP, the embedding (one row per
token) and lm_head one block per output row. Everything else (the RMSNorm gains) takes Levanter's AdamW
sub-chain: elementwise Adam, and the ONLY part whose gradients are clipped by global norm (the norm computed
over that subset); the mini chain has no clip, hence `clips_itself=True`.

Levanter computes the block mean and repeats it to full size (no memory saved). Here v is stored once per
block, shape (n_blocks, 1), and broadcast: the same numbers, with optimizer state of ~1x the parameters (m).
Weight decay follows Levanter's mask (workers.optimizers.base.is_decayed): matrices and lm_head decayed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from workers.optimizers import _cpu_kernels as cpu_kernels
from workers.optimizers.base import HParams, OptimizerSpec, SearchSpace, is_decayed, named_params_by_role
from workers.optimizers.functional import (
    adam_step_,
    clip_by_global_norm_,
    restore_state_dtypes,
    state_dtype_grad,
    state_zeros,
)

# Parameters whose second moment is shared per attention head (Levanter's "query"/"key" labels).
PER_HEAD_SUFFIXES = ("attn.wq.weight", "attn.wk.weight")


def num_blocks(name: str, shape: torch.Size, n_heads: int) -> int:
    """The number of second-moment blocks of mini parameter `name` (its rows are split evenly among them).

    Levanter's mean axes (OPTIMIZERS.md 3.6): q/k per head; v, o, MLP, embedding, lm_head per output row.
    Tests monkeypatch this function (e.g. to `prod(shape)`, blocks of one element: plain AdamW).
    """
    if name.endswith(PER_HEAD_SUFFIXES):
        return n_heads
    return shape[0]


class AdamMini(torch.optim.Optimizer):
    """One optimizer over all parameters; each param group has a "rule": "mini" or "adamw".

    A mini group also lists per parameter its number of blocks ("blocks"); an adamw group's gradients are
    clipped together to `max_grad_norm` (0 = off) before its Adam step.
    """

    def __init__(
        self,
        params: Iterable[dict[str, Any]],
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        max_grad_norm: float,
    ) -> None:
        defaults = {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": 0.0, "rule": "mini"}
        super().__init__(params, defaults)
        self.max_grad_norm = max_grad_norm
        for group in self.param_groups:
            if group["rule"] not in ("mini", "adamw"):
                raise ValueError(f"unknown rule {group['rule']!r}; valid: mini, adamw")
            if group["rule"] == "mini":
                blocks = group.get("blocks")
                if blocks is None or len(blocks) != len(group["params"]):
                    raise ValueError("a mini param group needs one block count per parameter in 'blocks'")
                for p, n in zip(group["params"], blocks, strict=True):
                    if n < 1 or p.numel() % n != 0:
                        raise ValueError(f"cannot split a parameter of shape {tuple(p.shape)} into {n} blocks")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Levanter clips the AdamW sub-chain alone: its gradients' norm over that subset (OPTIMIZERS.md 1).
        adam_work: list[tuple[dict[str, Any], list[torch.Tensor], list[torch.Tensor]]] = []
        adam_grads: list[torch.Tensor] = []
        for group in self.param_groups:
            if group["rule"] == "mini":
                self._mini_step(group)
            else:
                params = [p for p in group["params"] if p.grad is not None]
                # A copy: clipping scales it in place, and p.grad stays what the trainer computed.
                grads = [state_dtype_grad(p).clone() for p in params]
                adam_work.append((group, params, grads))
                adam_grads.extend(grads)
        if adam_grads:
            clip_by_global_norm_(adam_grads, self.max_grad_norm)
        for group, params, grads in adam_work:
            self._adamw_step(group, params, grads)
        return loss

    def _mini_step(self, group: dict[str, Any]) -> None:
        lr, wd, beta1, beta2, eps = group["lr"], group["weight_decay"], group["beta1"], group["beta2"], group["eps"]
        params: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        moments: list[torch.Tensor] = []
        second: list[torch.Tensor] = []
        steps: list[int] = []
        for p, n in zip(group["params"], group["blocks"], strict=True):
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = state_zeros(p)
                # One second moment per block: (n_blocks, 1), broadcast over the block's entries.
                state["exp_avg_sq"] = torch.zeros((n, 1), dtype=state["exp_avg"].dtype, device=p.device)
            state["step"] += 1
            params.append(p)
            grads.append(state_dtype_grad(p))
            moments.append(state["exp_avg"])
            second.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not params:
            return
        kernels = cpu_kernels.kernels_for(params, grads, moments, second)
        if kernels is not None:  # the same step in one pass over each block (float32 CPU tensors)
            bc1s, bias2s = [1 - beta1**t for t in steps], [1 - beta2**t for t in steps]
            kernels.adam_mini_step(params, grads, moments, second, beta1, beta2, bc1s, bias2s, eps, lr, wd)
            return
        torch._foreach_lerp_(moments, grads, 1 - beta1)
        for p, g, m, v, step in zip(params, grads, moments, second, steps, strict=True):
            n = v.size(0)
            g_blocks = g.reshape(n, -1)  # (n_blocks, block_size)
            # v_B <- b2 v_B + (1-b2) mean(g_B^2); vecdot sums the squares without a full-size temporary.
            v.mul_(beta2).add_(
                torch.linalg.vecdot(g_blocks, g_blocks).unsqueeze(1), alpha=(1 - beta2) / g_blocks.size(1)
            )
            bias1 = 1 - beta1**step
            bias2 = 1 - beta2**step
            denom = (v / bias2).sqrt_().add_(eps)  # (n_blocks, 1): sqrt(v_hat) + eps, as optax scale_by_adam
            if wd != 0:
                p.mul_(1 - lr * wd)
            p_blocks = p.view(n, -1)  # (n_blocks, block_size)
            m_blocks = m.view(n, -1)  # (n_blocks, block_size)
            if p.dtype == m.dtype:
                p_blocks.addcdiv_(m_blocks, denom, value=-lr / bias1)
            else:  # bf16 parameters with fp32 state: form the update in fp32, apply it in the parameter dtype
                p_blocks.add_((m_blocks / denom).to(p.dtype), alpha=-lr / bias1)

    def _adamw_step(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        lr, wd, beta1, beta2, eps = group["lr"], group["weight_decay"], group["beta1"], group["beta2"], group["eps"]
        # torch's fused Adam kernel where the dtypes allow it, else _foreach ops (functional.adam_step_).
        adam_step_(self.state, params, grads, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=wd)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        restore_state_dtypes(self, state_dict)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Adam-mini's param groups for our Transformer: mini (decayed / not decayed) and adamw (norms).

    Each group holds (name, parameter) pairs, so torch keeps the names ("param_names") for inspection.
    """
    config = getattr(model, "config", None)
    n_heads = getattr(config, "n_heads", None)
    if not isinstance(n_heads, int):
        raise ValueError("adam_mini needs model.config.n_heads to split wq/wk into per-head blocks")
    mini_decayed: list[tuple[str, nn.Parameter]] = []
    mini_plain: list[tuple[str, nn.Parameter]] = []
    adamw: list[tuple[str, nn.Parameter]] = []
    for role, pairs in named_params_by_role(model).items():
        for name, p in pairs:
            if role == "norm":  # Levanter's mask sends everything that is not a Linear/embedding to AdamW
                adamw.append((name, p))
            elif is_decayed(role):
                mini_decayed.append((name, p))
            else:
                mini_plain.append((name, p))
    groups: list[dict[str, Any]] = []
    for pairs, wd in ((mini_decayed, weight_decay), (mini_plain, 0.0)):
        if pairs:
            blocks = [num_blocks(name, p.shape, n_heads) for name, p in pairs]
            groups.append({"params": pairs, "rule": "mini", "weight_decay": wd, "blocks": blocks})
    if adamw:
        # Levanter's decay mask leaves norms undecayed (OPTIMIZERS.md 1).
        groups.append({"params": adamw, "rule": "adamw", "weight_decay": 0.0})
    return groups


def build(model: nn.Module, hp: HParams) -> torch.optim.Optimizer:
    return AdamMini(
        param_groups(model, float(hp["wd"])),
        lr=float(hp["lr"]),
        beta1=float(hp["beta1"]),
        beta2=float(hp["beta2"]),
        eps=float(hp["eps"]),
        max_grad_norm=float(hp["max_grad_norm"]),
    )


# PAPER.md section 3: Adam-mini's Phase I grid is AdamW's. Baseline: the paper's 130m 1x best
# (../shared/data/paper_results.json, optimizer "mini": lr 8e-3, wd 0.1, warmup 2000, betas 0.9/0.98,
# eps 1e-15, clip 1, batch 128).
PAPER_SPACE = SearchSpace(
    grid={
        "lr": (4e-3, 8e-3, 1.6e-2, 3.2e-2),
        "wd": (0.0, 0.1, 0.2),
        "warmup": (500, 1000, 2000, 4000),
        "beta1": (0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98),
        "eps": (1e-25, 1e-20, 1e-15, 1e-10),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "batch_size": (128, 256, 512, 1024),
    },
    baseline={
        "lr": 8e-3,
        "wd": 0.1,
        "warmup": 2000,
        "beta1": 0.9,
        "beta2": 0.98,
        "eps": 1e-15,
        "max_grad_norm": 1.0,
        "batch_size": 128,
    },
    fixed={"min_lr_ratio": 0.0},
)

# AdamW's tiny grid (workers/optimizers/adamw.py) with the lr values halved: same hyperparameters and number
# of values, baseline lr in the second place as in the paper's grid. Calibration on tiny-130k (chinchilla
# 0.25, 160 steps, other values at this baseline): lr 1.5e-3 / 3e-3 / 6e-3 / 1.2e-2 / 2.4e-2 reached eval loss
# 2.574 / 2.460 / 2.589 / 2.658 / 2.870 (AdamW's baseline: 2.465). Otherwise the paper's Adam-mini baseline.
TINY_SPACE = SearchSpace(
    grid={
        "lr": (1.5e-3, 3e-3, 6e-3, 1.2e-2),
        "wd": (0.0, 0.1, 0.2),
        "warmup": (16, 32, 64, 128),
        "beta1": (0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98),
        "eps": (1e-25, 1e-20, 1e-15, 1e-10),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "batch_size": (16, 32, 64, 128),
    },
    baseline={
        "lr": 3e-3,
        "wd": 0.1,
        "warmup": 32,
        "beta1": 0.9,
        "beta2": 0.98,
        "eps": 1e-15,
        "max_grad_norm": 1.0,
        "batch_size": 32,
    },
    fixed={"min_lr_ratio": 0.0},
)

SPEC = OptimizerSpec(
    name="adam_mini",
    build=build,
    # Levanter MiniConfig defaults (OPTIMIZERS.md 3.6) where the search space gives no baseline.
    defaults={"wd": 0.0, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8},
    spaces={"paper": PAPER_SPACE, "tiny": TINY_SPACE},
    routing=(
        "mini (one v per block, unclipped): wq/wk per head; wv, wo, MLP, embedding, lm_head per output row; "
        "AdamW (elementwise v, clipped by max_grad_norm over this subset): norms; "
        "decayed: hidden matrices and lm_head; not decayed: embedding, norms"
    ),
    clips_itself=True,
    reference="Levanter MiniConfig (stanford-crfm/levanter src/levanter/optim/adam_mini.py), v stored per block",
    cpu_kernels=True,
)
