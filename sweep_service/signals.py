"""SIGINT and SIGTERM stop a sweep resumably; a second one stops the process at once.

The handlers only set an event (and write one line with os.write, which is safe inside a handler), so a signal
that lands anywhere, ray.init included, never raises a KeyboardInterrupt traceback. The engine watches the event:
it stops its Ray Tune run, puts the trials in flight back to pending, releases the sweep's lease and raises
`Interrupted`; the command then exits 128 + the signal's number (130 for SIGINT, 143 for SIGTERM: the shell's
convention). Ray Tune's own SIGINT handler is switched off (TUNE_DISABLE_SIGINT_HANDLER, ray/tune/tune.py):
it would end `fit()` as if the sweep were done.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP = threading.Event()  # set by the first SIGINT/SIGTERM; the dispatcher and the engine watch it
_received: list[int] = []


class Interrupted(BaseException):
    """The sweep stopped on a signal, resumably. A BaseException, like KeyboardInterrupt: a handler that turns
    errors into a failed sweep must not catch it."""

    def __init__(self, signum: int | None = None) -> None:
        self.signum = signum if signum is not None else received() or signal.SIGINT
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}")


def _handle(signum: int, _frame: FrameType | None) -> None:
    if STOP.is_set():
        os.write(2, b"sweep-service: second signal: stopping now\n")
        os._exit(128 + signum)  # the Ray watchdog (sweep_service/ray_watchdog.py) takes the local Ray down with us
    _received.append(signum)
    STOP.set()
    os.write(
        2,
        f"sweep-service: {signal.Signals(signum).name}: stopping; trials in flight go back to pending and the sweep "
        "resumes where it stopped (send it again to stop at once)\n".encode(),
    )


_installed: list[bool] = []


def install() -> Callable[[], None]:
    """Install the handlers (main thread only, as Python requires); returns what puts the previous ones back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # only the main thread may set handlers; the caller's thread owns none
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _handle)
    _installed[:] = [True]

    def restore() -> None:
        _installed.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def reinstall() -> None:
    """Put the handlers back after ray.init: Ray's core worker installs its own SIGTERM handler (absl's failure
    signal handler, which aborts the process), which would turn a SIGTERM into a crash. No-op unless installed."""
    if _installed and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _handle)


def received() -> int | None:
    """The first signal received, or None."""
    return _received[0] if _received else None


def exit_code(signum: int | None = None) -> int:
    """128 + the signal's number, as a shell reports a process a signal ended."""
    return 128 + (signum or received() or signal.SIGINT)
