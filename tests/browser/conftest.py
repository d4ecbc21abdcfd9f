"""Fixtures of the browser tests: headless Chromium driven by Selenium through Debian's chromedriver, and the
real service (`sweep-service serve`) as a subprocess on a free loopback port with its own SWEEP_HOME.

Debian's `chromium` and `chromium-driver` are installed by the project's setup (`make install`, Makefile);
where they are missing (apt unavailable) every browser test is skipped and says so. Selenium is pointed at
/usr/bin/chromedriver explicitly, so Selenium Manager never tries to download a browser or a driver.

Screenshots go to the test's tmp_path and to runs/screenshots/ (gitignored) at the repository root.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "runs" / "screenshots"
HOST = "127.0.0.1"
SERVER_START_S = 180.0  # `serve` imports torch and Ray before it answers: ~10 s on 2 free cores, minutes on busy ones
WINDOW = (1400, 1000)


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", chromium), ("chromedriver", driver)) if p is None)
        pytest.skip(
            f"{missing} not installed: `make install` installs Debian's chromium and chromium-driver "
            "(apt-get install -y chromium chromium-driver); it could not here"
        )
    return chromium, driver


@pytest.fixture(scope="session")
def driver() -> Iterator[Any]:
    """One headless Chromium for the session (a new one costs seconds on 2 cores)."""
    chromium, chromedriver = _browser_paths()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces it may not get
        "--disable-gpu",
        "--disable-dev-shm-usage",  # /dev/shm is small in containers; Chromium then crashes on big pages
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]
    home: Path
    token: str | None = None

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        # 60 s: a bootstrap endpoint (/speedups) takes seconds on a loaded 2-core machine; 10 s timed out there
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def log(self) -> str:
        path = self.home / "serve.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@contextlib.contextmanager
def serve(home: Path, *, dispatcher: bool, token: str | None = None) -> Iterator[Server]:
    """`sweep-service serve` on a free port (with or without its dispatcher), stopped (its process group: the
    local Ray it started included) at the end."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "SWEEP_HOME": str(home), "SWEEP_RAY_NUM_CPUS": "2", "SWEEP_API_TOKEN": token or ""}
    for name in ("DATABASE_URL", "RAY_ADDRESS", "SWEEP_API_READ_TOKENS"):
        env.pop(name, None)
    args = [sys.executable, "-m", "sweep_service.cli", "serve", "--host", HOST, "--port", str(port)]
    if not dispatcher:
        args.append("--no-dispatcher")
    log = (home / "serve.log").open("w")
    proc = subprocess.Popen(
        args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    server = Server(f"http://{HOST}:{port}", proc, home, token)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"`sweep-service serve` exited with {proc.returncode}:\n{server.log()}")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"`sweep-service serve` did not answer within {SERVER_START_S:.0f} s:\n{server.log()}")
            time.sleep(0.3)
        yield server
    finally:
        # The whole process group: the server and the local Ray it started. SIGKILL if SIGTERM is not enough.
        # (uvicorn's graceful stop waits for open event streams: a page left open would hold it, hence SIGKILL.)
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        log.close()


Shot = Callable[[str], Path]
StartServer = Callable[..., Server]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """start_server(dispatcher=..., token=...) -> a running Server with its SWEEP_HOME under tmp_path; all
    are stopped at the end of the test."""
    with contextlib.ExitStack() as stack:
        started: list[Server] = []

        def start(*, dispatcher: bool, token: str | None = None) -> Server:
            home = tmp_path / f"home{len(started)}"
            started.append(stack.enter_context(serve(home, dispatcher=dispatcher, token=token)))
            return started[-1]

        yield start


@pytest.fixture
def shot(driver: Any, tmp_path: Path) -> Shot:
    """Save a screenshot of the whole page under tmp_path and runs/screenshots/; returns the tmp_path copy."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        # The whole page, not only the window: DevTools' screenshot beyond the viewport (capped in height).
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path = tmp_path / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")
        assert path.stat().st_size > 1000
        return path

    return take
