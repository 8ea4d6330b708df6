"""Feast's own web UI serves our store's views and feature service (``feast -c DIR ui``).

The README's install must bring what the UI needs (gRPC, via ``feast[grpcio]``); this
starts the UI on a loopback port over a freshly applied embedded store, reads its
registry API and stops it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from feature_repo.settings import FeastSettings
from feature_repo.store import open_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: ``feast`` is the console script of ``feast.cli.cli:cli``; run it with this interpreter.
FEAST = "from feast.cli.cli import cli; cli()"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except OSError:
        return 0, b""


def test_feast_ui_serves_the_views_and_the_feature_service(tmp_path: Path) -> None:
    settings = FeastSettings(project="uitest", data_dir=tmp_path / "feast")
    handle = open_store(settings)
    data_dir = handle.yaml_path.parent
    handle.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNREC_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            FEAST,
            "-c",
            str(data_dir),
            "ui",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        status, body = 0, b""
        while time.monotonic() < deadline and proc.poll() is None:
            status, body = _get(f"{base}/api/v1/feature_views?project=uitest")
            if status == 200:
                break
            time.sleep(1)
        if status != 200:
            proc.kill()
            out = proc.communicate(timeout=10)[0].decode(errors="replace")
            pytest.fail(f"feast ui did not serve (exit {proc.returncode}):\n{out[-4000:]}")
        views = {v["spec"]["name"] for v in json.loads(body)["featureViews"]}
        assert {"item_content_embedding", "item_tower_embedding", "user_tower_embedding"} <= views
        status, body = _get(f"{base}/api/v1/feature_services?project=uitest")
        assert status == 200
        assert "ranking" in {s["spec"]["name"] for s in json.loads(body)["featureServices"]}
        status, body = _get(f"{base}/projects-list.json")
        assert status == 200 and b"uitest" in body
        assert _get(f"{base}/")[0] == 200  # the web app itself
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
