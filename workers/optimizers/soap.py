"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner, as the paper ran it (Levanter's blocked SOAP).

The paper's runs used Levanter's `scale_by_soap` (OPTIMIZERS.md 3.10 and section 1; stanford-crfm/levanter
src/levanter/optim/soap.py, a port of nikhilvyas/SOAP). Per parameter block G (t counts every step, 1-based):

- t = 1 only initialises: L = (1 - b_sh) G G^T, R = (1 - b_sh) G^T G, Q_L / Q_R = eigenvectors of L + eps I /
  R + eps I by descending eigenvalue. The block's update is zero (weight decay still applies: Levanter adds
  wd * theta after the zero update, and with a warmup the learning rate at t = 1 is 0 anyway).
- t >= 2: m = b1 m + (1 - b1) G is kept in the ORIGINAL basis (Levanter and nikhilvyas/SOAP) and projected
  each step: G' = Q_L^T G Q_R, v = b2 v + (1 - b2) G'^2 (v lives in the rotated basis),
  u = Q_L ((Q_L^T m Q_R) / (sqrt(v) + eps)) Q_R^T * sqrt(1 - b2^t) / (1 - b1^t).
  The bias corrections use t, which counts the initialising step although m and v skipped it: Levanter's
  count (nikhilvyas/SOAP starts its count after the skipped step). We follow Levanter.
- Then, when t % precondition_frequency == 0, one power iteration per side with exp_avg_sq re-sorted:
  est = diag(Q^T L Q), order by est descending, permute v along that side and the columns of Q,
  Q <- qr(L Q). Levanter feeds the factor from BEFORE this step's gradient (its `state["GG"]`, one step
  behind nikhilvyas/SOAP, which updates L first); we follow Levanter.
- Then L <- lerp(L, G G^T, 1 - b_sh), R <- lerp(R, G^T G, 1 - b_sh).
- theta <- theta - lr (u + wd theta), wd masked as Levanter (matrices and lm_head decayed; norms, embedding not).

Which parameters get which rotation, per Levanter's code:
- A 2-D dimension of size >= max_precond_dim (10000, Levanter; `>=` as there) gets no rotation and is not split
  into blocks; the other dimension still rotates. Dimensions below it rotate.
- 1-D parameters (the RMSNorm gains) ARE preconditioned: Levanter gives a vector of n entries an n x n factor
  (blocked like any rotated dim), whatever max_precond_dim says. We treat a vector as an (n, 1) matrix with a
  rotated row side and no column side, which is that rule exactly.
- Embedding (vocab, d) and lm_head (vocab, d) follow the same size rule. At the paper's scales the Llama-3
  vocabulary (128,256 >= 10,000) is never rotated nor split, and d is rotated in blocks: a one-sided rotation.
  At the tiny scales the byte vocabulary (256) is below max_precond_dim, so, as Levanter's code would, we
  rotate both sides of the embedding and head there.
- Blocking (partition_grads_into_blocks, block_size): rotated dims longer than block_size are split into
  block_size chunks plus a remainder (Levanter's BlockPartitioner); each block has its own factors. Levanter
  then zero-pads every block to block_size x block_size to stack them; at the paper's shapes (multiples of 256)
  that padding is empty, and for SOAP zero rows/columns change nothing in exact arithmetic, so we do not pad:
  a matrix that fits in one block gives exactly the unblocked result.
- Levanter merges small dims toward target_merged_dim_size (`merge_small_dims`, on by default in SoapConfig,
  target 2048; workers/optimizers/_merge_dims.py). At the paper's scales that leaves every 2-D matrix as it is
  (Levanter's (heads, head_dim, embed) attention tensors become exactly our (d, d) matrices); on the tiny ladder a
  64 x 64 .. 128 x 512 matrix merges into one vector (rotated in block_size blocks), while 192 x 192 (tiny-1.2m)
  stays 2-D. A merged dim is left unrotated only if all its dims were. `merge_small_dims: false` turns it off.

Speed: blocks of the same shape (and hyperparameters) across all parameters are stacked and processed with
batched matmul / eigh / QR; their state tensors are kept as views of one stacked tensor between steps so that
steady-state steps do not re-concatenate them. Preconditioners and moments are float32 whatever the parameter
dtype (float64 for float64 parameters, for the reference tests); eigh falls back to float64 if it fails.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workers.optimizers._merge_dims import SOAP_TARGET, merge_small_dims
from workers.optimizers.base import HParams, OptimizerSpec, SearchSpace, decay_param_groups
from workers.optimizers.functional import apply_update_

# ---------------------------------------------------------------------------------------------------------------
# Blocking helpers (also used by kron.py): a parameter is seen as a 2-D matrix and tiled by rectangular regions,
# each made of equal blocks, so that blocks of one shape can be stacked into a (B, r, c) batch.


@dataclass(frozen=True)
class Region:
    """Rows [row0, row0 + rows*r) x cols [col0, col0 + cols*c) of a matrix, tiled by rows x cols blocks of (r, c)."""

    row0: int
    rows: int
    r: int
    col0: int
    cols: int
    c: int

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks of matrix `x` in this region, stacked row-major: (count, r, c)."""
        sub = x[self.row0 : self.row0 + self.rows * self.r, self.col0 : self.col0 + self.cols * self.c]
        # (rows*r, cols*c) -> (rows, r, cols, c) -> (rows, cols, r, c) -> (count, r, c)
        return sub.reshape(self.rows, self.r, self.cols, self.c).transpose(1, 2).reshape(self.count, self.r, self.c)

    def scatter_(self, out: torch.Tensor, blocks: torch.Tensor) -> None:
        """Write `blocks` (count, r, c) back into matrix `out`: the inverse of `gather`."""
        # (count, r, c) -> (rows, cols, r, c) -> (rows, r, cols, c) -> (rows*r, cols*c)
        tiles = blocks.reshape(self.rows, self.cols, self.r, self.c).transpose(1, 2)
        out[self.row0 : self.row0 + self.rows * self.r, self.col0 : self.col0 + self.cols * self.c] = tiles.reshape(
            self.rows * self.r, self.cols * self.c
        )


def split_dim(size: int, block_size: int, split: bool) -> list[tuple[int, int, int]]:
    """Runs (start, n_chunks, chunk) covering a dim: block_size chunks then one remainder (Levanter BlockPartitioner).

    Levanter splits a dim only when 0 < block_size < size and the dim is preconditioned (rotated / triangular).
    """
    if not split or block_size <= 0 or size <= block_size:
        return [(0, 1, size)]
    full = size // block_size
    runs = [(0, full, block_size)]
    if size > full * block_size:
        runs.append((full * block_size, 1, size - full * block_size))
    return runs


def block_regions(rows: int, cols: int, block_size: int, split_rows: bool, split_cols: bool) -> tuple[Region, ...]:
    """The regions (at most four: full/remainder x full/remainder) that tile a (rows, cols) matrix."""
    return tuple(
        Region(r0, nr, r, c0, nc, c)
        for r0, nr, r in split_dim(rows, block_size, split_rows)
        for c0, nc, c in split_dim(cols, block_size, split_cols)
    )


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """A 2-D view of a 1-D or 2-D tensor: a vector of n entries is an (n, 1) matrix."""
    if t.ndim == 1:
        return t.view(-1, 1)  # (n,) -> (n, 1)
    if t.ndim == 2:
        return t
    raise ValueError(f"only 1-D and 2-D parameters are supported (the Llama model has no others), got {t.ndim}-D")


def state_dtype(p: torch.Tensor) -> torch.dtype:
    """float32 state whatever the parameter dtype; float64 for float64 parameters (reference tests)."""
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def stacked(chunks: Sequence[torch.Tensor]) -> torch.Tensor:
    """torch.cat(chunks) along dim 0, without copying when the chunks already are consecutive views of one tensor.

    Bucket state is stored per parameter as views (torch.split) of the stacked tensor of the previous step, so in
    steady state this returns that tensor itself and in-place updates of it reach every parameter's state.
    """
    base = chunks[0]._base
    if base is not None and base.ndim == chunks[0].ndim:
        offset = 0
        for chunk in chunks:
            if (
                chunk._base is not base
                or chunk.shape[1:] != base.shape[1:]
                or chunk.stride() != base.stride()
                or chunk.storage_offset() != base.storage_offset() + offset * base.stride(0)
            ):
                break
            offset += chunk.shape[0]
        else:
            if offset == base.shape[0]:
                return base
    return torch.cat(list(chunks))


def unstack(full: torch.Tensor, counts: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """Per-parameter views of a stacked tensor (the inverse of `stacked`)."""
    return torch.split(full, list(counts))


def store_stacked(
    states: Sequence[dict[str, Any]], keys: Sequence[str], counts: Sequence[int], full: torch.Tensor
) -> None:
    """Point each state entry at its rows of the stacked tensor `full` (views, no copy)."""
    for state, key, chunk in zip(states, keys, unstack(full, counts), strict=True):
        state[key] = chunk


def load_stacked(states: Sequence[dict[str, Any]], keys: Sequence[str], counts: Sequence[int]) -> torch.Tensor:
    """The stacked state[key] over entries; a freshly concatenated stack is stored back as views so that the
    next steps find it without copying (after initialisation or load_state_dict)."""
    chunks = [state[key] for state, key in zip(states, keys, strict=True)]
    full = stacked(chunks)
    if full is not chunks[0]._base:
        store_stacked(states, keys, counts, full)
    return full


def load_state_exact(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
    """Restore per-parameter state exactly: each tensor as a copy with its own saved dtype.

    torch's Optimizer.load_state_dict casts floating-point state to the parameter's dtype (fp32 moments and
    preconditioners would become bf16 for bf16 parameters) and may alias the caller's tensors; this undoes both.
    Call it after torch's load_state_dict, which restores the param groups.
    """
    saved: dict[Any, dict[str, Any]] = state_dict["state"]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, p in enumerate(params):
        if index not in saved:
            continue
        optimizer.state[p] = {
            key: value.to(device=p.device, copy=True) if isinstance(value, torch.Tensor) else copy.deepcopy(value)
            for key, value in saved[index].items()
        }


# ---------------------------------------------------------------------------------------------------------------
# SOAP math on stacked blocks (B, r, c); factors (B, n, n).


def eigh_descending(mats: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of symmetric `mats` (B, n, n), columns by descending eigenvalue; float64 retry on failure."""
    try:
        _, vectors = torch.linalg.eigh(mats)
    except torch.linalg.LinAlgError:  # nikhilvyas/SOAP's fallback: retry in float64
        _, vectors = torch.linalg.eigh(mats.double())
        vectors = vectors.to(mats.dtype)
    # Levanter jnp.flip(eigh, axis=1): descending. Row-major like every other state tensor, so that a resumed run
    # (whose loaded state is re-stacked contiguously) feeds the same memory layout to the same matmuls.
    return vectors.flip(-1).contiguous()


def project(x: torch.Tensor, ql: torch.Tensor | None, qr: torch.Tensor | None) -> torch.Tensor:
    """Q_L^T X Q_R (a missing side is the identity)."""
    if ql is not None:
        x = ql.mT @ x
    if qr is not None:
        x = x @ qr
    return x


def project_back(x: torch.Tensor, ql: torch.Tensor | None, qr: torch.Tensor | None) -> torch.Tensor:
    """Q_L X Q_R^T (a missing side is the identity)."""
    if ql is not None:
        x = ql @ x
    if qr is not None:
        x = x @ qr.mT
    return x


def power_qr_step(gg: torch.Tensor, q: torch.Tensor, v: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One power iteration + QR of Levanter's get_orthogonal_matrix_QR for one side, re-sorting v along `dim`.

    est = diag(Q^T GG Q); order = argsort(est, descending); v permuted along `dim` (1: rows / left factor, 2: cols /
    right factor); Q_new = qr(GG Q[:, order]). GG Q is computed once: its diagonal product gives est and its
    reordered columns are GG Q[:, order].
    """
    gq = gg @ q  # (B, n, n)
    est = (q * gq).sum(dim=-2)  # (B, n): column j is q_j^T GG q_j
    order = torch.sort(est, dim=-1, descending=True, stable=True).indices  # (B, n)
    if dim == 1:
        v = torch.gather(v, 1, order.unsqueeze(-1).expand_as(v))  # rows of v follow the sorted eigenvectors
    else:
        v = torch.gather(v, 2, order.unsqueeze(1).expand_as(v))  # columns of v
    power = torch.gather(gq, 2, order.unsqueeze(1).expand_as(gq))  # (B, n, n): GG @ Q[:, order]
    # The Q of torch.linalg.qr (LAPACK geqrf + orgqr, bitwise the same) without forming R, whose batched triu is
    # slow for many small blocks on a busy CPU.
    reflectors, tau = torch.geqrf(power)
    return torch.linalg.householder_product(reflectors, tau).contiguous(), v


# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Work:
    """One region of one parameter in the current step."""

    state: dict[str, Any]
    k: int  # region index: the suffix of this region's state keys
    region: Region
    grad: torch.Tensor  # the parameter's gradient as a matrix, state dtype
    update: torch.Tensor  # the parameter's update as a matrix, state dtype (filled here)


_HPARAM_KEYS = ("beta1", "beta2", "shampoo_beta", "eps", "precondition_frequency")


class SOAP(torch.optim.Optimizer):
    """Levanter's blocked SOAP (see the module docstring). Parameters must be 1-D or 2-D."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),  # Levanter SoapConfig beta1, beta2
        shampoo_beta: float = 0.95,  # Levanter SoapConfig (a negative value means beta2, as there)
        eps: float = 1e-8,  # Levanter SoapConfig epsilon
        weight_decay: float = 0.0,  # Levanter SoapConfig
        precondition_frequency: int = 10,  # Levanter SoapConfig
        max_precond_dim: int = 10000,  # Levanter SoapConfig: excludes vocabulary dims
        block_size: int = 256,  # Levanter SoapConfig
        partition_grads_into_blocks: bool = True,  # Levanter SoapConfig
        merge_small_dims: bool = False,  # Levanter scale_by_soap's default; SoapConfig (and SPEC) turn it on
        target_merged_dim_size: int = SOAP_TARGET,  # Levanter SoapConfig
    ) -> None:
        if precondition_frequency < 1:
            raise ValueError(f"precondition_frequency must be >= 1, got {precondition_frequency}")
        defaults = dict(
            lr=lr,
            beta1=betas[0],
            beta2=betas[1],
            shampoo_beta=shampoo_beta if shampoo_beta >= 0 else betas[1],
            eps=eps,
            weight_decay=weight_decay,
            precondition_frequency=precondition_frequency,
            max_precond_dim=max_precond_dim,
            block_size=block_size,
            partition_grads_into_blocks=partition_grads_into_blocks,
            merge_small_dims=merge_small_dims,
            target_merged_dim_size=target_merged_dim_size,
        )
        super().__init__(params, defaults)

    @staticmethod
    def layout(p: torch.Tensor, group: dict[str, Any]) -> tuple[tuple[bool, bool], tuple[Region, ...], tuple[int, int]]:
        """Which sides of `p` (as a matrix) rotate, the regions that tile it into blocks, and that matrix's shape
        (rows, cols) after Levanter's merge_small_dims (a merged vector of n entries is (n, 1))."""
        limit = int(group["max_precond_dim"])
        shape = tuple(p.shape)
        # Levanter _get_preconditioner_types: a dim >= max_precond_dim is not rotated; a vector always is.
        null = (False,) if p.ndim == 1 else tuple(size >= limit for size in shape)
        if p.ndim not in (1, 2):
            raise ValueError(f"only 1-D and 2-D parameters are supported, got {p.ndim}-D")
        if group.get("merge_small_dims", False):
            shape, null = merge_small_dims(shape, int(group["target_merged_dim_size"]), null)
        if len(shape) == 1:
            rows, cols = shape[0], 1
            rotate = (not null[0], False)  # a vector: one n x n factor (blocked)
        else:
            rows, cols = shape
            rotate = (not null[0], not null[1])
        split = bool(group["partition_grads_into_blocks"])
        block = int(group["block_size"])
        return rotate, block_regions(rows, cols, block, split and rotate[0], split and rotate[1]), (rows, cols)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        buckets: dict[tuple[Any, ...], list[_Work]] = defaultdict(list)
        applies: list[tuple[torch.Tensor, torch.Tensor, float, float]] = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                rotate, regions, matrix = self.layout(p, group)
                dtype = state_dtype(p)
                grad = p.grad.reshape(matrix).to(dtype)
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
                update = torch.zeros(grad.shape, dtype=dtype, device=p.device)
                for k, region in enumerate(regions):
                    key = (
                        region.r,
                        region.c,
                        rotate,
                        state["step"],
                        tuple(group[name] for name in _HPARAM_KEYS),
                        dtype,
                        p.device,
                    )
                    buckets[key].append(_Work(state, k, region, grad, update))
                applies.append((p, update, float(group["lr"]), float(group["weight_decay"])))

        for key, works in buckets.items():
            _, _, rotate, t, hparams, _, _ = key
            self._step_bucket(works, rotate, t, dict(zip(_HPARAM_KEYS, hparams, strict=True)))

        for p, update, lr, wd in applies:
            apply_update_(p, update.view_as(p), lr, wd)
        return loss

    def _step_bucket(self, works: list[_Work], rotate: tuple[bool, bool], t: int, hp: dict[str, Any]) -> None:
        """Advance every block of one bucket (same shape, sides, step and hyperparameters) together."""
        counts = [w.region.count for w in works]
        grads = torch.cat([w.region.gather(w.grad) for w in works])  # (B, r, c)
        sides = (("L", rotate[0]), ("R", rotate[1]))
        b1, b2, b_sh, eps = float(hp["beta1"]), float(hp["beta2"]), float(hp["shampoo_beta"]), float(hp["eps"])

        def outer(side: str) -> torch.Tensor:
            return grads @ grads.mT if side == "L" else grads.mT @ grads  # (B, r, r) or (B, c, c)

        states = [w.state for w in works]

        def load(name: str) -> torch.Tensor:
            return load_stacked(states, [f"{name}{w.k}" for w in works], counts)

        def store(name: str, full: torch.Tensor) -> None:
            store_stacked(states, [f"{name}{w.k}" for w in works], counts, full)

        if t == 1:
            # Levanter init_step: factors from the first gradient, eigenbases by eigh, a zero update.
            for side, on in sides:
                if not on:
                    continue
                gg = outer(side).mul_(1 - b_sh)  # lerp(0, G G^T, 1 - b_sh)
                eye = torch.eye(gg.shape[-1], dtype=gg.dtype, device=gg.device)
                store(f"GG_{side}", gg)
                store(f"Q_{side}", eigh_descending(gg + eps * eye))
            store("exp_avg", torch.zeros_like(grads))
            store("exp_avg_sq", torch.zeros_like(grads))
            return

        ql = load("Q_L") if rotate[0] else None
        qr = load("Q_R") if rotate[1] else None
        exp_avg, exp_avg_sq = load("exp_avg"), load("exp_avg_sq")
        exp_avg.lerp_(grads, 1 - b1)  # m in the original basis (Levanter tree_update_moment)
        g_rot = project(grads, ql, qr)
        exp_avg_sq.mul_(b2).addcmul_(g_rot, g_rot, value=1 - b2)  # v in the rotated basis
        direction = project(exp_avg, ql, qr).div(exp_avg_sq.sqrt().add_(eps))
        correction = (1 - b2**t) ** 0.5 / (1 - b1**t)  # Levanter: bias corrections with the count t
        updates = project_back(direction, ql, qr).mul_(correction)  # (B, r, c)

        if t % int(hp["precondition_frequency"]) == 0:
            # Power iteration + QR with the factors from before this gradient (Levanter's state["GG"]).
            if ql is not None:
                ql, exp_avg_sq = power_qr_step(load("GG_L"), ql, exp_avg_sq, dim=1)
                store("Q_L", ql)
            if qr is not None:
                qr, exp_avg_sq = power_qr_step(load("GG_R"), qr, exp_avg_sq, dim=2)
                store("Q_R", qr)
        for side, on in sides:
            if on:
                gg = load(f"GG_{side}")
                gg.lerp_(outer(side), 1 - b_sh)
                store(f"GG_{side}", gg)
        store("exp_avg", exp_avg)
        store("exp_avg_sq", exp_avg_sq)
        for w, chunk in zip(works, unstack(updates, counts), strict=True):
            w.region.scatter_(w.update, chunk)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        load_state_exact(self, state_dict)


def build(model: nn.Module, hp: HParams) -> torch.optim.Optimizer:
    return SOAP(
        decay_param_groups(model, float(hp["wd"])),
        lr=float(hp["lr"]),
        betas=(float(hp["beta1"]), float(hp["beta2"])),
        shampoo_beta=float(hp["shampoo_beta"]),
        eps=float(hp["eps"]),
        precondition_frequency=int(hp["precondition_frequency"]),
        max_precond_dim=int(hp["max_precond_dim"]),
        block_size=int(hp["block_size"]),
        partition_grads_into_blocks=bool(hp["partition_grads_into_blocks"]),
        merge_small_dims=bool(hp["merge_small_dims"]),
        target_merged_dim_size=int(hp["target_merged_dim_size"]),
    )


# PAPER.md section 3 (Phase I grid) with the 130m 1x best as baseline (OPTIMIZERS.md section 1, [P-tex-soap];
# paper_results.json soape/130m/1). precondition_frequency: {10} in general, {1, 5} also at 130m 1x, where 1 won.
# partition_grads_into_blocks is not in PAPER.md's Phase I list but the paper tuned it (paper_results.json
# non_stable_keys_phase1 for soape), so it is searched here too.
PAPER_SPACE = SearchSpace(
    grid={
        "lr": (4e-3, 8e-3, 1.6e-2),
        "wd": (0.0, 0.1, 0.2),
        "warmup": (500, 1000, 2000),
        "beta1": (0.8, 0.9, 0.95),
        "beta2": (0.9, 0.95, 0.98, 0.99),
        "shampoo_beta": (0.9, 0.95, 0.98, 0.99),
        "precondition_frequency": (1, 5, 10),
        "block_size": (128, 256, 512),
        "partition_grads_into_blocks": (False, True),
        "eps": (1e-20, 1e-15, 1e-10),
        "batch_size": (128, 256, 512, 1024),
    },
    baseline={
        "lr": 1.6e-2,
        "wd": 0.1,
        "warmup": 1000,
        "beta1": 0.95,
        "beta2": 0.98,
        "shampoo_beta": 0.95,
        "precondition_frequency": 1,
        "block_size": 256,
        "partition_grads_into_blocks": True,
        "eps": 1e-15,
        "batch_size": 128,
    },
    fixed={"max_grad_norm": 1.0, "min_lr_ratio": 0.0},
)

# Same hyperparameters and number of values for the tiny CPU scales (a run of ~640 steps of 32 x 128 tokens).
# Warmups and batches map like AdamW's tiny grid (paper 500/1000/2000 -> 16/32/64). Block sizes keep the paper's
# ratio to the width (128/256/512 at d = 512 are d/4, d/2, d; at tiny-130k d = 64: 16/32/64), so the tiny runs
# are blocked the way the paper's were. Learning rates centred on the best of a calibration at tiny-130k, 1x
# Chinchilla (640 steps, other values the baseline's): lr 1.2e-2 -> 1.517, 2.4e-2 -> 1.519 final eval loss
# (AdamW's tiny baseline: 1.868; SOAP with no rotation, max_precond_dim 1 and AdamW's betas/eps: 1.870).
TINY_SPACE = SearchSpace(
    grid={
        "lr": (6e-3, 1.2e-2, 2.4e-2),
        "wd": (0.0, 0.1, 0.2),
        "warmup": (16, 32, 64),
        "beta1": (0.8, 0.9, 0.95),
        "beta2": (0.9, 0.95, 0.98, 0.99),
        "shampoo_beta": (0.9, 0.95, 0.98, 0.99),
        "precondition_frequency": (1, 5, 10),
        "block_size": (16, 32, 64),
        "partition_grads_into_blocks": (False, True),
        "eps": (1e-20, 1e-15, 1e-10),
        "batch_size": (16, 32, 64, 128),
    },
    baseline={
        "lr": 1.2e-2,
        "wd": 0.1,
        "warmup": 32,
        "beta1": 0.95,
        "beta2": 0.98,
        "shampoo_beta": 0.95,
        "precondition_frequency": 1,
        "block_size": 32,
        "partition_grads_into_blocks": True,
        "eps": 1e-15,
        "batch_size": 32,
    },
    fixed={"max_grad_norm": 1.0, "min_lr_ratio": 0.0},
)

SPEC = OptimizerSpec(
    name="soap",
    build=build,
    # Levanter SoapConfig defaults (OPTIMIZERS.md 3.10; Levanter soap.py) where the search space gives no value.
    defaults={
        "wd": 0.0,
        "beta1": 0.95,
        "beta2": 0.95,
        "shampoo_beta": 0.95,
        "eps": 1e-8,
        "precondition_frequency": 10,
        "block_size": 256,
        "partition_grads_into_blocks": True,
        "max_precond_dim": 10000,
        "merge_small_dims": True,
        "target_merged_dim_size": SOAP_TARGET,
    },
    spaces={"paper": PAPER_SPACE, "tiny": TINY_SPACE},
    routing=(
        "all parameters: SOAP (Levanter's blocked variant): 2-D matrices rotated on each side whose size is below "
        "max_precond_dim (10000), in block_size blocks, after merging small dims toward 2048; "
        "1-D norm gains rotated as vectors (n x n factors); "
        "embedding/lm_head by the same size rule (paper vocab dim unrotated, tiny byte vocab rotated); decayed: "
        "hidden matrices and lm_head; not decayed: embedding, norms"
    ),
    reference="Levanter scale_by_soap (stanford-crfm/levanter optim/soap.py), after nikhilvyas/SOAP",
)
