"""CPU kernels for the elementwise rules torch has no fused kernel for (_cpu_kernels.cpp), built on first use.

Cautious, MARS, AdamH, Lion, Adam-mini and Sophia-H each cost a fused AdamW step plus 2-5 passes of torch ops over
model-sized tensors (measured on the bench model: 2.1-3.6x a fused AdamW step); the kernels do the same arithmetic
in one or two passes. `torch.utils.cpp_extension.load` compiles _cpu_kernels.cpp with the machine's C++ compiler
the first time (~40 s on the 2-core dev machine; ninja is a dependency of the project) into the torch extensions
cache, keyed by the source and this CPU's instruction set, so later processes (Ray trials, tests) load it in
milliseconds.

Setting: SWEEP_CPU_KERNELS=0 turns them off (torch ops everywhere). When the build fails (no compiler) the
optimizers warn once and use their torch-op paths, which remain the reference: tests compare the two.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).with_name("_cpu_kernels.cpp")
ENV_SWITCH = "SWEEP_CPU_KERNELS"

_lock = threading.Lock()
_loaded: dict[str, ModuleType | None] = {}


def enabled() -> bool:
    """False when SWEEP_CPU_KERNELS is 0/false/off."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "off", "no")


def _cpu_signature() -> str:
    """This CPU's instruction-set flags (the build uses -march=native), so a shared cache never mixes CPUs."""
    flags = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


def load() -> ModuleType | None:
    """The compiled kernels, building them on first use; None when switched off or the build failed (warned once)."""
    if not enabled():
        return None
    if "module" in _loaded:  # every optimizer step lands here: no lock once built (a dict read is atomic)
        return _loaded["module"]
    with _lock:
        if "module" not in _loaded:
            _loaded["module"] = _build()
        return _loaded["module"]


def _build() -> ModuleType | None:
    from torch.utils.cpp_extension import _get_build_directory
    from torch.utils.cpp_extension import load as load_extension

    # The source's hash in the name too: two checkouts (or versions) on one machine keep separate builds instead
    # of rebuilding over each other in torch's shared cache.
    source_hash = hashlib.sha1(SOURCE.read_bytes()).hexdigest()[:10] if SOURCE.exists() else "missing"
    name = f"sweep_cpu_kernels_{_cpu_signature()}_{source_hash}"
    try:
        build_dir = Path(_get_build_directory(name, verbose=False))
        if not any(build_dir.glob("*.so")):
            message = f"sweep-service: building the CPU optimizer kernels in {build_dir} (first use, ~1 min)"
            print(message, file=sys.stderr)
    except Exception:  # a private torch helper, used only for this message
        pass
    try:
        return load_extension(
            name=name,
            sources=[str(SOURCE)],
            # -fopenmp: at::parallel_for is OpenMP in torch's CPU builds (the extension shares torch's libgomp);
            # -fno-math-errno lets sqrt vectorise, -fno-trapping-math the masks (no code here reads FP exception
            # flags; NaN and inf propagate exactly as without it).
            extra_cflags=["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # no compiler, no ninja, a read-only cache: torch ops instead
        warnings.warn(
            f"sweep-service: CPU optimizer kernels unavailable ({type(exc).__name__}: {exc}); Cautious, MARS, "
            f"AdamH, Lion, Adam-mini and Sophia-H use torch ops (slower, same results up to rounding). Set "
            f"{ENV_SWITCH}=0 to skip the build.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def usable(*tensor_lists: Sequence[torch.Tensor]) -> bool:
    """True when every tensor is a contiguous float32 CPU tensor: what the kernels take."""
    return all(_usable(ts) for ts in tensor_lists)


def _usable(tensors: Iterable[torch.Tensor]) -> bool:
    # is_cpu and an identity test on the dtype: this runs every step on every tensor (t.device builds an object).
    return all(t.is_cpu and t.dtype is torch.float32 and t.is_contiguous() for t in tensors)


def kernels_for(*tensor_lists: Sequence[torch.Tensor]) -> ModuleType | None:
    """The kernels when they are on and can take these tensors, else None (the caller uses torch ops)."""
    if not enabled() or not all(tensor_lists) or not usable(*tensor_lists):
        return None
    return load()
