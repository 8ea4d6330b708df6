"""The broker's jars: copied once per machine from Maven Central into the cache."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from devstack.kafka.config import BrokerError, BrokerSettings
from devstack.kafka.system import now, tail_text
from learn_core.settings import cache_dir, load

log = logging.getLogger(__name__)

_LIBS_MANIFEST = "libs.json"


def kafka_home(version: str) -> Path:
    """Per-version cache folder; the jars live in its ``libs`` subfolder."""
    return cache_dir() / "kafka" / version


def default_pom() -> Path:
    """The pom.xml shipped beside this module, listing the broker's runtime jars."""
    return Path(__file__).resolve().parent / "pom.xml"


def fetch_jars(settings: BrokerSettings | None = None) -> Path:
    """Copy the broker jars and their runtime dependencies into the cache; skip if there.

    Maven downloads into ``~/.m2`` and copies into a temporary folder that is renamed into
    place only when complete, so an interrupted fetch is never mistaken for a cached one.
    """
    settings = settings or load(BrokerSettings)
    home = kafka_home(settings.version)
    libs = home / "libs"
    if (home / _LIBS_MANIFEST).is_file() and libs.is_dir():
        return libs
    pom = settings.pom or default_pom()
    if not pom.is_file():
        raise BrokerError(f"pom.xml not found at {pom}; set LEARNREC_BROKER_POM")
    if shutil.which(settings.mvn) is None:
        raise BrokerError(
            f"Maven ({settings.mvn!r}) not on PATH; install it or set LEARNREC_BROKER_MVN"
        )
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=home))
    cmd = [
        settings.mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-Dkafka.version={settings.version}",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    log.info("fetching Kafka %s jars with Maven into %s", settings.version, libs)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(
            f"mvn failed ({proc.returncode}) fetching Kafka {settings.version}:\n"
            + tail_text(proc.stdout + proc.stderr, 30)
        )
    jars = sorted(p.name for p in staging.glob("*.jar"))
    if not any(j.startswith(f"kafka_2.13-{settings.version}") for j in jars):
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(f"mvn copied no kafka_2.13-{settings.version} jar into {staging}")
    try:
        staging.rename(libs)
    except OSError:
        # Another process finished first; its copy is as good as ours.
        shutil.rmtree(staging, ignore_errors=True)
    manifest = {"version": settings.version, "jars": jars, "fetched_at": now()}
    (home / _LIBS_MANIFEST).write_text(json.dumps(manifest, indent=2))
    log.info("fetched %d jars in %.1fs", len(jars), time.monotonic() - started)
    return libs
