"""The HTTP harness of ``bench.http_ranking``: a closed-loop client, server processes, CPU.

Kept apart from the benchmark's set-up so that each stays readable; nothing here knows
about ranking or Feast.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


# --- the client ---------------------------------------------------------------------------


def closed_loop(
    port: int,
    path: str,
    bodies: Sequence[bytes],
    concurrency: int,
    accept: str | None = None,
) -> tuple[list[float], float]:
    """Send every body once over ``concurrency`` keep-alive connections; (latencies, wall s).

    Each thread sends its next request as soon as the previous answer is read (closed
    loop); the bodies are shared out through one counter, so the total is bounded.
    """
    lock = threading.Lock()
    nxt = [0]
    lat: list[float] = []
    errors: list[str] = []
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
    if accept:
        headers["Accept"] = accept
    go = threading.Barrier(concurrency + 1)

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine: list[float] = []
        go.wait()
        try:
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= len(bodies):
                    break
                t0 = time.perf_counter()
                conn.request("POST", path, bodies[i], headers)
                resp = conn.getresponse()
                resp.read()
                dt = time.perf_counter() - t0
                if resp.status != 200:
                    errors.append(f"{path}: HTTP {resp.status}")
                    break
                mine.append(dt)
        finally:
            conn.close()
            with lock:
                lat.extend(mine)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(errors[0])
    return lat, wall


def request(
    port: int, method: str, path: str, body: bytes | None = None, accept: str | None = None
) -> tuple[str, bytes]:
    """One request on a fresh connection; (content type, body) of a 200, else RuntimeError."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if accept:
        headers["Accept"] = accept
    try:
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status}: {data[:300]!r}")
        return resp.getheader("Content-Type", ""), data
    finally:
        conn.close()


def post(port: int, path: str, body: bytes, accept: str | None = None) -> tuple[str, bytes]:
    return request(port, "POST", path, body, accept)


def get_json(port: int, path: str) -> dict[str, Any]:
    return json.loads(request(port, "GET", path)[1])


def post_json(port: int, path: str, body: bytes) -> dict[str, Any]:
    return json.loads(post(port, path, body)[1])


def group_cpu_s(pgid: int) -> float | None:
    """CPU seconds (user + system) of every live process in group ``pgid`` (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for pid in entries:
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # state ppid pgrp ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total / tick


# --- servers ----------------------------------------------------------------------------


class Server:
    """A server subprocess, its log file, and a readiness probe."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], port: int, log_dir: Path):
        self.name, self.port = name, port
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        log.info("starting %s: %s", name, " ".join(cmd))
        # Its own process group: gunicorn's and uvicorn's workers are stopped with it.
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, path: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready in {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        """Stop the server and every worker it forked (a worker outlived its master once)."""
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(0.1)
            if not _group_alive(pgid):
                break
        self.proc.wait()
        self._log.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
