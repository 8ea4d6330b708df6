"""Run ``learnrec`` as a child process, as a user would, with none of the caller's settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_learnrec(*argv: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m learnrec ARGV`` from this checkout; only ``env`` sets LEARNREC_/KAFKA_ vars."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LEARNREC_", "KAFKA_"))}
    base.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "learnrec", *argv],
        capture_output=True,
        text=True,
        env=base,
        timeout=timeout,
        cwd=ROOT,
    )
