"""optuna-dashboard: `speechstack dashboard` answers the study list over loopback HTTP, and
`speechstack dashboard-screenshot` saves a PNG of the study page from headless Chromium."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from speechstack import tune
from speechstack.cli import main
from speechstack.config import Config, load_config
from speechstack.dashboard import CHROMIUM_NAMES, DashboardServer, get_json

TRIALS = 6


def reporting_objective(trial: optuna.Trial) -> float:
    """A trivial objective with per-epoch reports, so every dashboard panel has data."""
    lr = trial.suggest_float("train.lr", 3e-4, 1e-2, log=True)
    mixup = trial.suggest_float("augment.mixup.p", 0.0, 0.5)
    value = 0.9 - abs(lr - 3e-3) * 20 - mixup * 0.1
    for epoch in range(3):
        trial.report(value * (epoch + 1) / 3, epoch)
    return value


@dataclass
class Study:
    """A finished 6-trial study ``speech_commands-cnn`` in ``folder/studies/``."""

    folder: Path
    config_path: Path
    config: Config

    @property
    def cli(self) -> list[str]:
        studies = self.folder / "studies"
        return ["--config", str(self.config_path), "--set", f"tune.studies_dir={studies}"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Study:
    folder = tmp_path_factory.mktemp("dashboard")
    path = repo_root / "configs" / "speech_commands" / "cnn.yaml"
    config = load_config(path, [f"tune.studies_dir={folder / 'studies'}"])
    report = tune.run_study(config, str(path), trials=TRIALS, objective=reporting_objective)
    assert len(report.trials) == TRIALS
    return Study(folder, path, config)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_dashboard_verb_serves_the_study_list_on_loopback(study: Study) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "speechstack.cli", "dashboard", *study.cli, "--port", str(port)],
        cwd=study.folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                studies = get_json(f"{base}/api/studies")["study_summaries"]
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "the dashboard did not answer in 90 s"
                time.sleep(0.3)
        assert [(s["study_name"], s["directions"]) for s in studies] == [
            ("speech_commands-cnn", ["maximize"])
        ]
        study_id = studies[0]["study_id"]
        detail = get_json(f"{base}/api/studies/{study_id}")
        assert len(detail["trials"]) == TRIALS and detail["has_intermediate_values"]
        with urllib.request.urlopen(f"{base}/dashboard/studies/{study_id}") as page:
            assert page.status == 200 and "text/html" in page.headers["Content-Type"]
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert f"{base}/dashboard" in output
    assert f"study 'speech_commands-cnn': {base}/dashboard/studies/{study_id}" in output
    assert "dashboard stopped" in output


def test_dashboard_server_binds_loopback_and_stops(study: Study) -> None:
    with DashboardServer(tune.storage_url(study.config), port=0) as server:
        assert server.host == "127.0.0.1"
        names = [s["study_name"] for s in get_json(f"{server.url}/api/studies")["study_summaries"]]
        assert names == ["speech_commands-cnn"]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server.url}/api/studies", timeout=2)


@pytest.mark.skipif(
    not any(shutil.which(name) for name in CHROMIUM_NAMES),
    reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run does)",
)
def test_screenshot_of_the_study_page(study: Study, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    assert main(["dashboard-screenshot", *study.cli]) == 0
    png = study.folder / "studies" / "speech_commands-cnn" / "dashboard.png"
    assert f"wrote {png}" in capsys.readouterr().out
    image = Image.open(png).convert("RGB")
    assert image.size == (1400, 900)
    red, green, blue = image.getpixel((700, 20))  # the dashboard's blue app bar: it rendered
    assert blue > 200 and red < 100, (red, green, blue)
    colours = image.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 200  # plots and text, not a blank or error page
    assert [p.name for p in png.parent.iterdir() if p.name.startswith(".")] == []
