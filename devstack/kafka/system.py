"""OS helpers for the local broker: loopback ports, process liveness and stopping, log tails."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from devstack.kafka.config import LOCALHOST, BrokerError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Bindable as the JVM binds it: SO_REUSEADDR, so TIME_WAIT left by a restart is no obstacle."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOCALHOST, port))
        except OSError:
            return False
        return True


def port_open(port: int) -> bool:
    """Something accepts TCP connections on ``LOCALHOST:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOCALHOST, port)) == 0


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; an exited child of ours is reaped, a zombie counts as gone."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: ask the kernel below
    stat = Path(f"/proc/{pid}/stat")
    try:
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        pass  # no /proc (or the process just went): fall back to signal 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_is_broker(pid: int, data_dir: Path) -> bool:
    """Alive, and (where /proc tells) really our broker, so a reused pid is never killed."""
    if not pid_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in args and str(data_dir / "server.properties").encode() in args


def stop_pid(
    pid: int, timeout_s: float, *, hard: bool = False, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """SIGTERM (a clean shutdown flushes logs), wait, then SIGKILL if it will not go."""

    def gone() -> bool:
        if proc is not None:
            return proc.poll() is not None
        return not pid_alive(pid)

    if gone():
        return
    try:
        os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gone():
            return
        time.sleep(0.1)
    log.warning("Kafka pid %d still alive %.0fs after SIGTERM; sending SIGKILL", pid, timeout_s)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=10)
    else:
        end = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < end:
            time.sleep(0.1)
    if not gone():
        raise BrokerError(f"Kafka pid {pid} survived SIGKILL")


def tail_file(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a (possibly large) log file."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        return tail_text(f.read().decode(errors="replace"), lines)


def tail_text(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
