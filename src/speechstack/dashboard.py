"""optuna-dashboard on a study storage, and a headless-Chromium screenshot of a study page.

``speechstack dashboard`` serves the storage's studies at ``http://127.0.0.1:<port>/dashboard``
until Ctrl-C. ``speechstack dashboard-screenshot`` serves it on a free loopback port for a
moment, loads the study page in headless Chromium and saves ``studies/<study>/dashboard.png``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from socketserver import ThreadingMixIn
from types import TracebackType
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from speechstack.artifacts import atomic_path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # the browser opens several connections at once


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No line per request on stderr."""


class DashboardServer:
    """optuna-dashboard's WSGI app on ``host:port`` (port 0: a free one), served from a
    background thread. A context manager: the server stops on exit."""

    def __init__(self, storage: str, host: str = "127.0.0.1", port: int = 8080) -> None:
        import optuna
        import optuna_dashboard

        self.storage = storage
        app = optuna_dashboard.wsgi(optuna.storages.RDBStorage(storage))
        self._server = make_server(
            host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> DashboardServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="optuna-dashboard", daemon=True
        )
        self._thread.start()
        wait_until_ready(self.url)
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def get_json(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_until_ready(base_url: str, timeout: float = 30.0) -> None:
    """Poll the dashboard's study list until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            get_json(f"{base_url}/api/studies", timeout=5)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"optuna-dashboard at {base_url} did not answer") from None
            time.sleep(0.2)


def study_id(base_url: str, name: str) -> int:
    """The dashboard's id of study ``name`` (from ``/api/studies``)."""
    studies = get_json(f"{base_url}/api/studies")["study_summaries"]
    for study in studies:
        if study["study_name"] == name:
            return int(study["study_id"])
    known = ", ".join(s["study_name"] for s in studies) or "none"
    raise FileNotFoundError(f"no study {name!r} in the dashboard's storage (it holds: {known})")


def find_chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(
        "Chromium not found (looked for " + ", ".join(CHROMIUM_NAMES) + "); on Debian: "
        "apt-get install -y chromium"
    )


def chromium_screenshot(
    url: str,
    out: Path,
    width: int = 1400,
    height: int = 900,
    render_ms: int = 10000,
    chromium: str | None = None,
) -> Path:
    """Load ``url`` in headless Chromium (fresh profile, no network services) and save a
    ``width`` x ``height`` PNG at ``out``, after ``render_ms`` of virtual time."""
    binary = chromium or find_chromium()
    out = Path(out)
    with (
        tempfile.TemporaryDirectory(prefix="speechstack-chromium-") as profile,
        atomic_path(out, ".png") as temp,
    ):
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={temp}",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={render_ms}",
            url,
        ]
        temp.unlink()  # Chromium writes it; an empty file left behind would hide a failure
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
        if not temp.is_file() or temp.stat().st_size == 0:
            raise RuntimeError(
                f"Chromium wrote no screenshot of {url} (exit {result.returncode}):\n"
                + result.stderr[-2000:]
            )
    return out


def screenshot_study(
    storage: str, name: str, out: Path, width: int = 1400, height: int = 900
) -> tuple[Path, str]:
    """Serve ``storage`` on a free loopback port and screenshot study ``name``'s page.
    Returns the PNG and the page's URL (on the now-stopped server)."""
    with DashboardServer(storage, "127.0.0.1", 0) as server:
        page = f"{server.url}/dashboard/studies/{study_id(server.url, name)}"
        return chromium_screenshot(page, out, width, height), page
