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

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import platform
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
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


# -fopenmp: at::parallel_for is OpenMP in torch's CPU builds (the extension shares torch's libgomp); -fno-math-errno
# lets sqrt vectorise, -fno-trapping-math the masks (no code here reads FP exception flags; NaN and inf propagate
# exactly as without it).
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math")
LDFLAGS = ("-fopenmp",)
# How long a process waits for another one's build before it gives up and uses torch ops (a build takes ~40 s on
# the 2-core dev machine; a builder that is stopped, not killed, would otherwise hold every trial).
BUILD_WAIT_SECONDS = 600.0


def build_name() -> str:
    """The extension's name: this CPU's flags (-march=native), and a hash of the source, the flags and torch's
    version, so that two checkouts or versions on one machine keep separate builds in torch's shared cache, and a
    build is never loaded by a torch it was not compiled against."""
    source = SOURCE.read_bytes() if SOURCE.exists() else b"missing"
    key = b"\0".join([source, " ".join(CFLAGS + LDFLAGS).encode(), torch.__version__.encode()])
    return f"sweep_cpu_kernels_{_cpu_signature()}_{hashlib.sha1(key).hexdigest()[:10]}"


def _build() -> ModuleType | None:
    from torch.utils.cpp_extension import _get_build_directory

    name = build_name()
    try:
        build_dir = Path(_get_build_directory(name, verbose=False))
        with _process_lock(build_dir / "sweep-build.lock") as held:
            if not held:
                _warn(f"another process has held the build lock in {build_dir} for {BUILD_WAIT_SECONDS:.0f} s")
                return None
            library = build_dir / f"{name}.so"
            if library.exists():  # built before (by this or another process): no ninja, no torch file lock
                try:
                    return _import(name, library)
                except ImportError:  # a link cut short by kill -9: build it again
                    library.unlink()
            # torch's own lock file (FileBaton): left behind when a builder was killed mid-build, and then waited
            # on forever by every later build. All builds of this name run under our lock, so a baton seen here is
            # a dead builder's.
            (build_dir / "lock").unlink(missing_ok=True)
            print(
                f"sweep-service: building the CPU optimizer kernels in {build_dir} (first use, ~1 min)", file=sys.stderr
            )
            return _compile(name)
    except Exception as exc:  # no compiler, no ninja, a read-only cache: torch ops instead
        _warn(f"{type(exc).__name__}: {exc}")
        return None


def _compile(name: str) -> ModuleType:
    from torch.utils.cpp_extension import load as load_extension

    module: ModuleType = load_extension(
        name=name,
        sources=[str(SOURCE)],
        extra_cflags=list(CFLAGS),
        extra_ldflags=list(LDFLAGS),
        verbose=False,
    )
    return module


def _import(name: str, library: Path) -> ModuleType:
    """Load a finished build as a Python extension module (what torch's loader does after ninja)."""
    spec = importlib.util.spec_from_file_location(name, library)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {library}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _process_lock(path: Path) -> Iterator[bool]:
    """An exclusive flock on `path`, waited for up to BUILD_WAIT_SECONDS: yields whether it is held. The kernel
    releases a flock when its process dies (kill -9 included), unlike a lock file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline, said = time.monotonic() + BUILD_WAIT_SECONDS, False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                if not said:
                    print(f"sweep-service: waiting for another process's build of the CPU kernels ({path.parent})",
                          file=sys.stderr)  # fmt: skip
                    said = True
                time.sleep(0.2)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _warn(why: str) -> None:
    warnings.warn(
        f"sweep-service: CPU optimizer kernels unavailable ({why}); Cautious, MARS, AdamH, Lion, Adam-mini and "
        f"Sophia-H use torch ops (slower, same results up to rounding). Set {ENV_SWITCH}=0 to skip the build.",
        RuntimeWarning,
        stacklevel=4,
    )


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
