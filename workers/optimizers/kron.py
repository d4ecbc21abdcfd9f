"""PSGD Kron, as the paper ran it (Levanter's port of kron_torch, OPTIMIZERS.md 3.9 and section 1).

Levanter's chain (stanford-crfm/levanter src/levanter/optim/kron.py, by the kron_torch author; the algorithm is
lixilinx/psgd_torch): clip_by_global_norm(max_grad_norm) ONLY when normalize_grads is off -> scale_by_kron ->
clip_by_block_rms(1.1) -> add_decayed_weights(wd, mask) -> scale(-lr). With t the 1-based step:

1. normalize_grads: g <- g / (||g|| + 1e-16) per leaf (else the global-norm clip above).
2. m = b1 m + (1 - b1) g; m_hat = m / (1 - b1^t) (no momentum state when b1 = 0).
3. Update probability p(t) = clip(exp(-0.001 (t - flat_start)), min_prob, 1), applied deterministically as in
   kron_torch and Levanter: a counter is incremented every step and the preconditioner is updated (and the
   counter reset) when counter >= 1/p(t). So every step until flat_start, then ever more rarely.
4. On an update, per block with Kronecker factors Q_L, Q_R (upper triangular, or diagonal for dims of size 1,
   dims > max_size_triangular, or vectors), after balancing the factors' max-abs every 100th update:
   V ~ N(0, I) from the optimizer's own generator; G = m_hat + sqrt(eps_f32) mean|m_hat| V (mean per leaf);
   A = Q_L G Q_R^T; conjB = Q_L^-T V Q_R^-1; for each side, with (t1, t2) = (A A^T, conjB conjB^T) on the left
   and (A^T A, conjB^T conjB) on the right:
   triangular: Q <- Q - precond_lr / lb(t1 + t2) triu(t1 - t2) Q, lb a spectral-norm lower bound;
   diagonal:   q <- q - precond_lr / max|t1 + t2| (t1 - t2) q.
   This is PSGD's whitening criterion: at its fixed point P E[g g^T] P = I for P = Q^T Q.
5. u = Q_L^T Q_L m_hat Q_R^T Q_R (with the factors just updated); u <- u / max(1, rms(u) / 1.1) per leaf.
6. theta <- theta - lr (u + wd theta), wd masked as Levanter (matrices and lm_head decayed; norms, embedding not).

"Leaf": Levanter's Llama stacks each per-layer weight across layers (haliax Stacked, scan_layers=True), so the
per-leaf operations above (normalize_grads, the damping mean, the RMS clip) act on e.g. all layers' wq together.
`build` reproduces that by grouping parameters whose names differ only in the layer index; a direct `Kron(...)`
treats each parameter as its own leaf unless `leaves` says otherwise. Blocks and factors are per layer.

Blocking: triangular dims longer than block_size are split into block_size chunks and a remainder (Levanter's
BlockPartitioner); diagonal dims are never split. Levanter zero-pads blocks to block_size to stack them; at the
paper's shapes (multiples of 256) there is no padding, and we never pad, so small matrices are single blocks.
Levanter's merge_small_dims (KronConfig: on, target 8192; workers/optimizers/_merge_dims.py) reshapes each
parameter first: at the paper's scales every 2-D matrix stays as it is (Levanter's (heads, head_dim, embed)
tensors become exactly our (d, d) matrices); on the tiny ladder every hidden matrix merges into one vector, which
then gets one diagonal factor (fewer than min_ndim_triangular dims). `merge_small_dims: false` turns it off.
At the paper's scales the 128,256-token vocabulary dim of the embedding and head
is > max_size_triangular (25000) and so diagonal; the tiny byte vocabulary (256) gets a triangular factor.

The random numbers come from a torch.Generator owned by the optimizer; its state and the step, update and
balance counters are in state_dict() (kron_torch keeps them outside it). Factors and momentum are float32
whatever the parameter dtype (float64 for float64 parameters). Blocks of one shape are processed together
with batched matmuls and triangular solves.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workers.optimizers._merge_dims import KRON_TARGET, merge_small_dims
from workers.optimizers.base import HParams, OptimizerSpec, SearchSpace, decay_param_groups
from workers.optimizers.functional import apply_update_
from workers.optimizers.soap import (
    Region,
    block_regions,
    load_stacked,
    load_state_exact,
    state_dtype,
    store_stacked,
)

PROB_DECAY = 0.001  # Levanter/kron_torch precond_update_prob_schedule: decay per step after flat_start
BALANCE_EVERY = 100  # Levanter: balance the factors' scales about every 100 preconditioner updates
RMS_CLIP = 1.1  # Levanter KronConfig: optax.clip_by_block_rms(1.1) after preconditioning
NORM_EPS = 1e-16  # Levanter norm_grads: g / (||g|| + 1e-16)
DAMP_EPS = float(torch.finfo(torch.float32).eps) ** 0.5  # Levanter: sqrt(float32 eps) ("bf16 eps too large")

Kind = str  # "tri" (upper-triangular factor), "diag" (diagonal factor, stored as a vector) or "none" (no factor)


def update_probability(step: int, min_prob: float, flat_start: int) -> float:
    """Levanter's precond_update_prob_schedule: clip(exp(-0.001 (step - flat_start)), min_prob, 1)."""
    exponent = -PROB_DECAY * (step - flat_start)
    if exponent >= 0:
        return 1.0
    return min(1.0, max(min_prob, math.exp(exponent)))


def factor_kinds(
    p: torch.Tensor, max_size_triangular: int, min_ndim_triangular: int, merge_target: int | None = None
) -> tuple[tuple[Kind, Kind], tuple[int, int]]:
    """Factor kinds for the rows and columns of `p` as a matrix (Levanter _get_preconditioner_types), and that
    matrix's shape, after Levanter's merge_small_dims toward `merge_target` when it is given.

    A dim is diagonal if its size is 1, it is larger than max_size_triangular, or the (merged) tensor has fewer
    than min_ndim_triangular dims (so vectors, the norm gains, get one diagonal factor and no column factor). A
    merged dim is diagonal if every dim merged into it was (Levanter: "F if any merged dim is F").
    """
    if p.ndim not in (1, 2):
        raise ValueError(f"only 1-D and 2-D parameters are supported, got {p.ndim}-D")

    def diagonal(size: int, ndim: int) -> bool:
        return size == 1 or size > max_size_triangular or ndim < min_ndim_triangular

    shape = tuple(p.shape)
    diag = tuple(diagonal(size, p.ndim) for size in shape)
    if merge_target is not None:
        shape, diag = merge_small_dims(shape, merge_target, diag)
        diag = tuple(d or diagonal(size, len(shape)) for size, d in zip(shape, diag, strict=True))
    kinds: tuple[Kind, ...] = tuple("diag" if d else "tri" for d in diag)
    if len(shape) == 1:
        return (kinds[0], "none"), (shape[0], 1)
    return (kinds[0], kinds[1]), (shape[0], shape[1])


def norm_lower_bound(a: torch.Tensor) -> torch.Tensor:
    """Levanter's cheap lower bound on the spectral norm of symmetric `a` (B, n, n), per block: (B,).

    x = the column of a with the largest norm, x <- x a, bound = ||(x / ||x||) a^T|| (scaled by max|a|).
    """
    max_abs = a.abs().amax(dim=(-2, -1))  # (B,)
    scaled = a / torch.where(max_abs > 0, max_abs, torch.ones_like(max_abs))[:, None, None]
    column = (scaled * scaled).sum(dim=-2).argmax(dim=-1)  # (B,): index of the largest column
    n = a.shape[-1]
    x = torch.gather(scaled, 2, column[:, None, None].expand(-1, n, 1)).mT  # (B, 1, n): that column
    x = x @ scaled  # (B, 1, n)
    x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    bound = max_abs * torch.linalg.vector_norm(x @ scaled.mT, dim=(-2, -1))
    return torch.where(max_abs > 0, bound, max_abs)


# Below this size a triangular factor is multiplied as a dense matrix: the split's extra calls and copies cost more
# than the flops they save (a choice for CPU BLAS; the results are the same either way).
TRIANGULAR_SPLIT_MIN = 128


def triu_matmul(q: torch.Tensor, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """q x (or q^T x) for upper-triangular q (B, n, n) and any x (B, n, c), skipping q's zero lower half.

    With q = [[q11, q12], [0, q22]] and x = [x1; x2]: q x = [q11 x1 + q12 x2; q22 x2] and
    q^T x = [q11^T x1; q12^T x1 + q22^T x2], recursing on the diagonal blocks: about n^2 c / 2 multiply-adds
    instead of n^2 c (torch has no triangular matmul; BLAS trmm would do this). The same sums as q @ x up to
    rounding order, since the skipped entries of q are exact zeros (Kron's factors stay upper triangular).
    """
    n = q.shape[-1]
    if n < 2 * TRIANGULAR_SPLIT_MIN:
        return (q.mT if transpose else q) @ x
    h = n // 2
    q11, q12, q22 = q[..., :h, :h], q[..., :h, h:], q[..., h:, h:]
    x1, x2 = x[..., :h, :], x[..., h:, :]
    if transpose:
        top = triu_matmul(q11, x1, transpose=True)
        bottom = torch.baddbmm(triu_matmul(q22, x2, transpose=True), q12.mT, x1)
    else:
        top = torch.baddbmm(triu_matmul(q11, x1), q12, x2)
        bottom = triu_matmul(q22, x2)
    return torch.cat([top, bottom], dim=-2)


def triu_triu_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a b for upper-triangular a and b (B, n, n): upper triangular, about n^3 / 3 multiply-adds instead of n^3.

    [[a11, a12], [0, a22]] [[b11, b12], [0, b22]] = [[a11 b11, a11 b12 + a12 b22], [0, a22 b22]], recursing on
    the two triangular products; a11 b12 skips a11's zeros (triu_matmul). This is Kron's factor step
    triu(T1 - T2) Q, the largest matmul of a preconditioner update on an unblocked matrix.
    """
    n = a.shape[-1]
    if n < 2 * TRIANGULAR_SPLIT_MIN:
        return a @ b
    h = n // 2
    a11, a12, a22 = a[..., :h, :h], a[..., :h, h:], a[..., h:, h:]
    b11, b12, b22 = b[..., :h, :h], b[..., :h, h:], b[..., h:, h:]
    top = torch.cat([triu_triu_matmul(a11, b11), torch.baddbmm(triu_matmul(a11, b12), a12, b22)], dim=-1)
    bottom = torch.cat([torch.zeros_like(a[..., h:, :h]), triu_triu_matmul(a22, b22)], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def left_mul(
    q: torch.Tensor | None, kind: Kind, x: torch.Tensor, transpose: bool = False, dense: bool = False
) -> torch.Tensor:
    """Q_L x (or Q_L^T x) for a factor of `kind` acting on the rows of x (B, r, c).

    A triangular factor skips its zero half (triu_matmul); `dense`: q is a full matrix (P = Q^T Q).
    """
    if q is None:
        return x
    if kind == "diag":
        return q.unsqueeze(-1) * x  # (B, r) -> (B, r, 1)
    if dense:
        return (q.mT if transpose else q) @ x
    return triu_matmul(q, x, transpose=transpose)


def right_mul(
    q: torch.Tensor | None, kind: Kind, x: torch.Tensor, transpose: bool = False, dense: bool = False
) -> torch.Tensor:
    """x Q_R^T (or x Q_R) for a factor of `kind` acting on the columns of x (B, r, c).

    A triangular factor skips its zero half: x Q^T = (Q x^T)^T and x Q = (Q^T x^T)^T (triu_matmul).
    """
    if q is None:
        return x
    if kind == "diag":
        return x * q.unsqueeze(-2)  # (B, c) -> (B, 1, c)
    if dense:
        return x @ (q if transpose else q.mT)
    return triu_matmul(q, x.mT, transpose=transpose).mT


def conj_b(ql: torch.Tensor | None, kl: Kind, qr: torch.Tensor | None, kr: Kind, v: torch.Tensor) -> torch.Tensor:
    """Q_L^-T V Q_R^-1 by triangular solves (Levanter _conjB: the left factor first, then the right)."""
    x = v
    if ql is not None:
        x = x / ql.unsqueeze(-1) if kl == "diag" else torch.linalg.solve_triangular(ql.mT, x, upper=False)
    if qr is not None:
        x = x / qr.unsqueeze(-2) if kr == "diag" else torch.linalg.solve_triangular(qr, x, upper=True, left=False)
    return x


def update_factor(q: torch.Tensor, kind: Kind, a: torch.Tensor, b: torch.Tensor, left: bool, lr: float) -> torch.Tensor:
    """One PSGD whitening step for one side's factor (Levanter _update_precond / _update_single_q)."""
    tiny = torch.finfo(q.dtype).tiny  # Levanter _add_tiny
    if kind == "diag":
        dim = -1 if left else -2
        t1, t2 = (a * a).sum(dim=dim), (b * b).sum(dim=dim)  # (B, n)
        step = lr / ((t1 + t2).abs().amax(dim=-1, keepdim=True) + tiny)  # (B, 1)
        return q - step * (t1 - t2) * q
    if left:
        t1, t2 = a @ a.mT, b @ b.mT  # (B, r, r)
    else:
        t1, t2 = a.mT @ a, b.mT @ b  # (B, c, c)
    step = lr / (norm_lower_bound(t1 + t2) + tiny)  # (B,)
    return q - step[:, None, None] * triu_triu_matmul(upper_triangle(t1 - t2), q)


def upper_triangle(x: torch.Tensor) -> torch.Tensor:
    """torch.triu(x) for a batch of square matrices, as a masked select.

    Batched torch.triu parallelises over the batch even for tiny matrices, which on a busy 2-core machine cost
    milliseconds per call (measured: 3.6 ms for 160 x 32 x 32 vs 0.05 ms for this).
    """
    n = x.shape[-1]
    index = torch.arange(n, device=x.device)
    return torch.where(index[:, None] <= index[None, :], x, torch.zeros((), dtype=x.dtype, device=x.device))


def gram(q: torch.Tensor | None, kind: Kind) -> torch.Tensor | None:
    """P = Q^T Q: (B, n, n) for a triangular factor, q^2 (B, n) for a diagonal one."""
    if q is None:
        return None
    return q * q if kind == "diag" else q.mT @ q


def form_gram(kind: Kind, n: int, other: int, interval: float) -> bool:
    """Whether to form P = Q^T Q for a side of size n (blocks n x other) whose factor serves `interval` steps.

    P costs one n^3 matmul and then saves one n^2 x other matmul per step against applying Q^T (Q m); so it pays
    when interval x other > n. In the early phase (the factors change every step) an unblocked 1024 x 256 matrix's
    left side would pay n^3 every step for nothing: measured on the bench model, that made a step ~25% slower
    than pytorch-optimizer's Kron. Diagonal factors: P is q^2, always formed.
    """
    return kind == "diag" or interval * other > n


def max_abs(q: torch.Tensor, kind: Kind) -> torch.Tensor:
    """max|q| per block: (B,)."""
    return q.abs().amax(dim=-1) if kind == "diag" else q.abs().amax(dim=(-2, -1))


def stacked_leaves(model: nn.Module) -> list[list[nn.Parameter]]:
    """Parameters grouped as Levanter's stacked leaves: names equal up to the layer index ("blocks.<i>.")."""
    leaves: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            leaves.setdefault(re.sub(r"^blocks\.\d+\.", "blocks.*.", name), []).append(p)
    return list(leaves.values())


@dataclass
class _Work:
    """One region of one parameter in the current step."""

    state: dict[str, Any]
    k: int  # region index: the suffix of this region's state keys
    region: Region
    index: int  # position of the parameter in this step's list
    grad: torch.Tensor  # the gradient as a matrix, state dtype
    update: torch.Tensor  # the update as a matrix, state dtype (filled here)


class Kron(torch.optim.Optimizer):
    """Levanter's PSGD Kron (see the module docstring). Parameters must be 1-D or 2-D."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        beta1: float = 0.9,  # Levanter KronConfig
        weight_decay: float = 0.1,  # Levanter KronConfig
        preconditioner_lr: float = 0.1,  # Levanter KronConfig
        preconditioner_init_scale: float = 1.0,  # Levanter KronConfig
        block_size: int = 256,  # Levanter KronConfig
        partition_grads_into_blocks: bool = True,  # Levanter KronConfig
        max_size_triangular: int = 25000,  # Levanter KronConfig
        min_ndim_triangular: int = 2,  # Levanter KronConfig
        merge_small_dims: bool = False,  # Levanter scale_by_kron's default; KronConfig (and SPEC) turn it on
        target_merged_dim_size: int = KRON_TARGET,  # Levanter KronConfig
        normalize_grads: bool = False,  # Levanter KronConfig
        max_grad_norm: float = 1.0,  # Levanter KronConfig; applied only when normalize_grads is off
        preconditioner_update_probability: float = 0.05,  # Levanter KronConfig: the schedule's minimum
        update_prob_flat_start: int = 500,  # Levanter KronConfig
        leaves: Sequence[Sequence[torch.Tensor]] | None = None,
        seed: int = 0,
    ) -> None:
        defaults = dict(
            lr=lr,
            beta1=beta1,
            weight_decay=weight_decay,
            preconditioner_lr=preconditioner_lr,
            preconditioner_init_scale=preconditioner_init_scale,
            block_size=block_size,
            partition_grads_into_blocks=partition_grads_into_blocks,
            max_size_triangular=max_size_triangular,
            min_ndim_triangular=min_ndim_triangular,
            merge_small_dims=merge_small_dims,
            target_merged_dim_size=target_merged_dim_size,
        )
        super().__init__(params, defaults)
        self.normalize_grads = normalize_grads
        self.max_grad_norm = max_grad_norm
        self.min_prob = preconditioner_update_probability
        self.flat_start = update_prob_flat_start
        # Leaf index per parameter id (Levanter's per-leaf normalization, damping mean and RMS clip).
        self._leaf_of: dict[int, int] = {}
        for index, leaf in enumerate(leaves or ()):
            for p in leaf:
                self._leaf_of[id(p)] = index
        self._n_leaves = len(leaves or ())
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) not in self._leaf_of:
                    self._leaf_of[id(p)] = self._n_leaves
                    self._n_leaves += 1
        first = self.param_groups[0]["params"][0]
        self._generator = torch.Generator(device=first.device)
        self._generator.manual_seed(seed)
        # Levanter's scale_by_kron state outside the per-parameter entries (saved by state_dict).
        self._step = 0
        self._update_counter = 0
        self._balance_counter = 0
        self._constants: dict[tuple[Any, ...], torch.Tensor] = {}
        # Per bucket: (Q_L, Q_R, P_L, P_R) for the stacked factors P was computed from (derived, not state).
        Factors = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]
        self._preconditioners: dict[tuple[Any, ...], Factors] = {}

    def layout(
        self, p: torch.Tensor, group: dict[str, Any]
    ) -> tuple[tuple[Kind, Kind], tuple[Region, ...], tuple[int, int]]:
        """Factor kinds of `p` as a matrix, the regions that tile it into blocks (triangular dims split), and
        that matrix's shape (after merge_small_dims when the group asks for it)."""
        target = int(group["target_merged_dim_size"]) if group.get("merge_small_dims", False) else None
        kinds, (rows, cols) = factor_kinds(
            p, int(group["max_size_triangular"]), int(group["min_ndim_triangular"]), target
        )
        split = bool(group["partition_grads_into_blocks"])
        block = int(group["block_size"])
        regions = block_regions(rows, cols, block, split and kinds[0] == "tri", split and kinds[1] == "tri")
        return kinds, regions, (rows, cols)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        entries = [(group, p) for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not entries:
            return loss

        self._step += 1
        t = self._step
        prob = update_probability(t, self.min_prob, self.flat_start)
        self._update_counter += 1
        do_update = prob > 0 and self._update_counter >= 1.0 / prob
        balance = False
        if do_update:
            self._update_counter = 0
            self._balance_counter += 1
            if self._balance_counter >= BALANCE_EVERY:
                balance = True
                self._balance_counter = 0

        device = entries[0][1].device
        layouts = [self.layout(p, group) for group, p in entries]
        grads = [p.grad.reshape(layout[2]).to(state_dtype(p)) for (_, p), layout in zip(entries, layouts, strict=True)]
        leaf = self._constant(tuple(self._leaf_of[id(p)] for _, p in entries), torch.int64, device)  # (P,)
        numel = self._constant(tuple(float(p.numel()) for _, p in entries), torch.float64, device)  # (P,)
        leaf_numel = torch.zeros(self._n_leaves, dtype=torch.float64, device=device).index_add_(0, leaf, numel)
        factor = self._grad_factors(grads, leaf)  # (P,) float64: clip or per-leaf normalization

        buckets: dict[tuple[Any, ...], list[_Work]] = defaultdict(list)
        updates: list[torch.Tensor] = []
        for index, (group, p) in enumerate(entries):
            kinds, regions, _ = layouts[index]
            state = self.state[p]
            update = torch.empty(grads[index].shape, dtype=grads[index].dtype, device=p.device)
            updates.append(update)
            for k, region in enumerate(regions):
                if f"Q_L{k}" not in state and kinds[0] != "none":
                    state[f"Q_L{k}"] = self._init_factor(p, kinds[0], region.r, region.count, group)
                if f"Q_R{k}" not in state and kinds[1] != "none":
                    state[f"Q_R{k}"] = self._init_factor(p, kinds[1], region.c, region.count, group)
                key = (
                    region.r,
                    region.c,
                    kinds,
                    float(group["beta1"]),
                    float(group["preconditioner_lr"]),
                    grads[index].dtype,
                    p.device,
                )
                buckets[key].append(_Work(state, k, region, index, grads[index], update))

        # Pass 1: momentum and m_hat per bucket; the per-leaf mean |m_hat| for the damping noise.
        m_hats: dict[tuple[Any, ...], torch.Tensor] = {}
        leaf_abs = torch.zeros(self._n_leaves, dtype=torch.float64, device=device)
        for key, works in buckets.items():
            beta1 = key[3]
            counts = [w.region.count for w in works]
            states = [w.state for w in works]
            owner = self._block_owners(works, device)  # (B,)
            grads_b = torch.cat([w.region.gather(w.grad) for w in works])  # (B, r, c)
            scale = factor[owner].to(grads_b.dtype)[:, None, None]  # (B, 1, 1)
            if beta1 > 0:
                for w in works:
                    if f"exp_avg{w.k}" not in w.state:
                        w.state[f"exp_avg{w.k}"] = torch.zeros(
                            (w.region.count, w.region.r, w.region.c), dtype=grads_b.dtype, device=grads_b.device
                        )
                exp_avg = load_stacked(states, [f"exp_avg{w.k}" for w in works], counts)
                exp_avg.lerp_(grads_b * scale, 1 - beta1)  # in place: the state views follow
                m_hat = exp_avg / (1 - beta1**t)
            else:
                m_hat = grads_b * scale  # Levanter: no momentum buffer when b1 = 0
            m_hats[key] = m_hat
            if do_update:
                leaf_abs.index_add_(0, leaf[owner], m_hat.abs().sum(dim=(-2, -1)).to(torch.float64))
        leaf_mean = leaf_abs / leaf_numel.clamp(min=1.0)  # (L,)

        # Pass 2: maybe update the factors, then precondition.
        for key, works in buckets.items():
            kinds, precond_lr = key[2], key[4]
            counts = [w.region.count for w in works]
            m_hat = m_hats[key]
            states = [w.state for w in works]
            ql = load_stacked(states, [f"Q_L{w.k}" for w in works], counts) if kinds[0] != "none" else None
            qr = load_stacked(states, [f"Q_R{w.k}" for w in works], counts) if kinds[1] != "none" else None
            if do_update:
                if balance and ql is not None and qr is not None:
                    ql, qr = self._balance(ql, kinds[0], qr, kinds[1])
                owner = self._block_owners(works, device)
                noise = torch.randn(m_hat.shape, generator=self._generator, dtype=m_hat.dtype, device=m_hat.device)
                damp = (DAMP_EPS * leaf_mean[leaf[owner]]).to(m_hat.dtype)[:, None, None]  # (B, 1, 1)
                g_in = m_hat + damp * noise
                a = right_mul(qr, kinds[1], left_mul(ql, kinds[0], g_in))  # Q_L G Q_R^T
                b = conj_b(ql, kinds[0], qr, kinds[1], noise)  # Q_L^-T V Q_R^-1
                if ql is not None:
                    ql = update_factor(ql, kinds[0], a, b, left=True, lr=precond_lr)
                if qr is not None:
                    qr = update_factor(qr, kinds[1], a, b, left=False, lr=precond_lr)
                for name, full in (("Q_L", ql), ("Q_R", qr)):
                    if full is not None:
                        store_stacked(states, [f"{name}{w.k}" for w in works], counts, full)
            # u = P_L m_hat P_R with P = Q^T Q, formed per side only where it pays (form_gram), cached while the
            # factors are unchanged; a side without P is applied as Q^T (Q m_hat).
            cached = self._preconditioners.get(key)
            if cached is None or cached[0] is not ql or cached[1] is not qr:
                interval = 1.0 / prob if prob > 0 else math.inf  # steps these factors will serve
                pl = gram(ql, kinds[0]) if form_gram(kinds[0], key[0], key[1], interval) else None
                pr = gram(qr, kinds[1]) if form_gram(kinds[1], key[1], key[0], interval) else None
                self._preconditioners[key] = (ql, qr, pl, pr)
            else:
                pl, pr = cached[2], cached[3]
            if pl is None:
                x = left_mul(ql, kinds[0], left_mul(ql, kinds[0], m_hat), transpose=True)
            else:
                x = left_mul(pl, kinds[0], m_hat, dense=True)
            if pr is None:
                x = right_mul(qr, kinds[1], right_mul(qr, kinds[1], x), transpose=True)
            else:
                x = right_mul(pr, kinds[1], x, dense=True)  # P symmetric: x P_R^T = x P_R
            for w, chunk in zip(works, torch.split(x, counts), strict=True):
                w.region.scatter_(w.update, chunk)

        # Levanter clip_by_block_rms(1.1) per leaf, then decoupled weight decay and -lr.
        sq = torch.stack(torch._foreach_norm(updates)).to(torch.float64) ** 2  # (P,)
        leaf_sq = torch.zeros(self._n_leaves, dtype=torch.float64, device=device).index_add_(0, leaf, sq)
        rms = (leaf_sq / leaf_numel.clamp(min=1.0)).sqrt()
        shrink = 1.0 / torch.clamp(rms / RMS_CLIP, min=1.0)  # (L,)
        per_param = shrink[leaf]
        for index, (group, p) in enumerate(entries):
            update = updates[index].mul_(per_param[index].to(updates[index].dtype))
            apply_update_(p, update.view_as(p), float(group["lr"]), float(group["weight_decay"]))
        return loss

    def _constant(
        self, values: tuple[float, ...] | tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """A small index/count tensor, cached: building it every step would be a host-to-device copy on CUDA."""
        key = (values, dtype, device)
        if key not in self._constants:
            self._constants[key] = torch.tensor(values, dtype=dtype, device=device)
        return self._constants[key]

    def _block_owners(self, works: list[_Work], device: torch.device) -> torch.Tensor:
        """The step-list position of the parameter owning each block of a bucket: (B,)."""
        return self._constant(tuple(w.index for w in works for _ in range(w.region.count)), torch.int64, device)

    def _grad_factors(self, grads: list[torch.Tensor], leaf: torch.Tensor) -> torch.Tensor:
        """Per-parameter gradient scale: 1/(leaf norm + 1e-16) if normalize_grads, else the global-norm clip."""
        sq = torch.stack(torch._foreach_norm(grads)).to(torch.float64) ** 2  # (P,)
        if self.normalize_grads:
            leaf_sq = torch.zeros(self._n_leaves, dtype=torch.float64, device=sq.device).index_add_(0, leaf, sq)
            return (1.0 / (leaf_sq.sqrt() + NORM_EPS))[leaf]
        if self.max_grad_norm > 0:
            # optax clip_by_global_norm: g * max_norm / ||g|| when ||g|| >= max_norm.
            total = sq.sum().sqrt()
            scale = torch.where(total < self.max_grad_norm, torch.ones_like(total), self.max_grad_norm / total)
            return scale.expand_as(sq)
        return torch.ones_like(sq)

    @staticmethod
    def _init_factor(p: torch.Tensor, kind: Kind, n: int, count: int, group: dict[str, Any]) -> torch.Tensor:
        """scale^(1/ndim) I (triangular) or scale^(1/ndim) 1 (diagonal) per block (Levanter _init_Q_exprs)."""
        value = float(group["preconditioner_init_scale"]) ** (1.0 / p.ndim)
        dtype = state_dtype(p)
        if kind == "diag":
            return torch.full((count, n), value, dtype=dtype, device=p.device)
        return (torch.eye(n, dtype=dtype, device=p.device) * value).expand(count, n, n).clone()

    @staticmethod
    def _balance(ql: torch.Tensor, kl: Kind, qr: torch.Tensor, kr: Kind) -> tuple[torch.Tensor, torch.Tensor]:
        """Give both factors of each block the geometric mean of their max-abs (Levanter balance_Qs)."""
        nl, nr = max_abs(ql, kl), max_abs(qr, kr)  # (B,)
        gmean = torch.exp((torch.log(nl) + torch.log(nr)) / 2)
        ql = ql * (gmean / nl).view(-1, *([1] * (ql.ndim - 1)))
        qr = qr * (gmean / nr).view(-1, *([1] * (qr.ndim - 1)))
        return ql, qr

    def state_dict(self) -> dict[str, Any]:
        state_dict = super().state_dict()
        state_dict["kron"] = {
            "step": self._step,
            "update_counter": self._update_counter,
            "balance_counter": self._balance_counter,
            "rng_state": self._generator.get_state(),
        }
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        extra = state_dict["kron"]
        rest = {key: value for key, value in state_dict.items() if key != "kron"}
        super().load_state_dict(rest)
        load_state_exact(self, rest)
        self._preconditioners.clear()
        self._step = int(extra["step"])
        self._update_counter = int(extra["update_counter"])
        self._balance_counter = int(extra["balance_counter"])
        self._generator.set_state(extra["rng_state"].clone())


def build(model: nn.Module, hp: HParams) -> torch.optim.Optimizer:
    return Kron(
        decay_param_groups(model, float(hp["wd"])),
        lr=float(hp["lr"]),
        beta1=float(hp["beta1"]),
        weight_decay=float(hp["wd"]),
        preconditioner_lr=float(hp["preconditioner_lr"]),
        preconditioner_init_scale=float(hp["preconditioner_init_scale"]),
        block_size=int(hp["block_size"]),
        partition_grads_into_blocks=bool(hp["partition_grads_into_blocks"]),
        normalize_grads=bool(hp["normalize_grads"]),
        max_grad_norm=float(hp["max_grad_norm"]),
        preconditioner_update_probability=float(hp["preconditioner_update_probability"]),
        update_prob_flat_start=int(hp["update_prob_flat_start"]),
        merge_small_dims=bool(hp["merge_small_dims"]),
        target_merged_dim_size=int(hp["target_merged_dim_size"]),
        leaves=stacked_leaves(model),
    )


# PAPER.md section 3 (Phase I grid) with the 130m 1x best as baseline (OPTIMIZERS.md section 1, [P-tex-kron];
# paper_results.json kron/130m/1: lr 0.002, wd 0.7, beta1 0.95, precond lr 0.2, min prob 0.05, flat start 2000,
# normalize_grads on, block 256, warmup 1000, clip 1 (inactive with normalize_grads, as in Levanter)).
PAPER_SPACE = SearchSpace(
    grid={
        "lr": (5e-4, 1e-3, 2e-3, 4e-3, 8e-3),
        "wd": (0.0, 0.5, 0.7, 0.9),
        "beta1": (0.9, 0.95, 0.98),
        "preconditioner_lr": (0.1, 0.2),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "normalize_grads": (False, True),
        "block_size": (128, 256, 512),
        "preconditioner_update_probability": (0.05, 0.1),
        "update_prob_flat_start": (500, 1000, 2000),
        "warmup": (1000, 2000, 4000),
        "batch_size": (128, 256, 512, 1024),
    },
    baseline={
        "lr": 2e-3,
        "wd": 0.7,
        "beta1": 0.95,
        "preconditioner_lr": 0.2,
        "max_grad_norm": 1.0,
        "normalize_grads": True,
        "block_size": 256,
        "preconditioner_update_probability": 0.05,
        "update_prob_flat_start": 2000,
        "warmup": 1000,
        "batch_size": 128,
    },
    fixed={"min_lr_ratio": 0.0, "preconditioner_init_scale": 1.0, "partition_grads_into_blocks": True},
)

# Same hyperparameters and number of values for the tiny CPU scales (~640 steps of 32 x 128 tokens). Warmups,
# flat starts and batches map like AdamW's tiny grid (paper 500/1000/2000/4000 steps -> 16/32/64/128); block sizes
# keep the paper's ratio to the width (128/256/512 at d = 512 -> 16/32/64 at d = 64). Learning rates centred on
# the best of a calibration at tiny-130k, 1x Chinchilla (640 steps): lr 3e-3 -> 1.550, 6e-3 -> 1.575 final eval
# loss (AdamW's tiny baseline: 1.868); at 0.25x: 1.5e-3 -> 3.23, 3e-3 -> 2.41, 6e-3 -> 2.19, 1.2e-2 -> 2.27.
TINY_SPACE = SearchSpace(
    grid={
        "lr": (7.5e-4, 1.5e-3, 3e-3, 6e-3, 1.2e-2),
        "wd": (0.0, 0.5, 0.7, 0.9),
        "beta1": (0.9, 0.95, 0.98),
        "preconditioner_lr": (0.1, 0.2),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "normalize_grads": (False, True),
        "block_size": (16, 32, 64),
        "preconditioner_update_probability": (0.05, 0.1),
        "update_prob_flat_start": (16, 32, 64),
        "warmup": (32, 64, 128),
        "batch_size": (16, 32, 64, 128),
    },
    baseline={
        "lr": 3e-3,
        "wd": 0.7,
        "beta1": 0.95,
        "preconditioner_lr": 0.2,
        "max_grad_norm": 1.0,
        "normalize_grads": True,
        "block_size": 32,
        "preconditioner_update_probability": 0.05,
        "update_prob_flat_start": 64,
        "warmup": 32,
        "batch_size": 32,
    },
    fixed={"min_lr_ratio": 0.0, "preconditioner_init_scale": 1.0, "partition_grads_into_blocks": True},
)

SPEC = OptimizerSpec(
    name="kron",
    build=build,
    # Levanter KronConfig defaults (OPTIMIZERS.md 3.9; Levanter kron.py) where the search space gives no value.
    defaults={
        "wd": 0.1,
        "beta1": 0.9,
        "preconditioner_lr": 0.1,
        "preconditioner_init_scale": 1.0,
        "normalize_grads": False,
        "block_size": 256,
        "partition_grads_into_blocks": True,
        "preconditioner_update_probability": 0.05,
        "update_prob_flat_start": 500,
        "merge_small_dims": True,  # Levanter KronConfig
        "target_merged_dim_size": KRON_TARGET,
    },
    spaces={"paper": PAPER_SPACE, "tiny": TINY_SPACE},
    routing=(
        "all parameters: PSGD Kron (Levanter's variant), small dims merged toward 8192: triangular factors per dim "
        "in block_size blocks, diagonal "
        "for dims of size 1 or > 25000 (paper vocab) and for vectors (norm gains); per stacked leaf (same name "
        "across layers): normalize_grads and the 1.1 RMS clip; decayed: hidden matrices and lm_head; not decayed: "
        "embedding, norms; clips itself: global-norm clip only when normalize_grads is off"
    ),
    clips_itself=True,
    reference="Levanter scale_by_kron (stanford-crfm/levanter optim/kron.py), after kron_torch / psgd_torch",
)
