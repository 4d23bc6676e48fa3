"""Real processes for integration tests: Daphne, Celery workers and beat, and redis-servers of a
test's own, on free ports, with their output kept under test-artifacts/logs/ for post-mortems."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
LOGS = ARTIFACTS / "logs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, proc: LiveProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.output()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


class LiveProcess:
    def __init__(self, name: str, args: list[str], env: dict[str, str]):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOGS / f"{name}-{os.getpid()}-{int(time.time() * 1000)}.log"
        self._log = open(self.log_path, "w")
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} never printed {text!r}:\n{self.output()[-3000:]}")

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a prefork worker's children too)."""
        if self.alive:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive:
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()


def procfile_web_command(procfile: Path = ROOT / "Procfile", **values: str) -> list[str]:
    """The Procfile's `web` command (what `make up` runs), its ${VAR:-default}s filled from `values`."""
    line = next(line for line in procfile.read_text().splitlines() if line.startswith("web:"))
    command = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: values.get(m.group(1), m.group(2)), line[len("web:"):])
    words = shlex.split(command)
    # `scripts/respawn web -- ...`: what runs is after the `--` (compose restarts containers itself)
    return words[words.index("--") + 1 :] if words[0] == "scripts/respawn" else words


def start_procfile_daphne(env: dict[str, str]) -> tuple[LiveProcess, int]:
    """A Daphne exactly as `make up` starts it (the Procfile's flags), on a free port."""
    port = free_port()
    words = procfile_web_command(WEB_PORT=str(port), BIND="127.0.0.1")
    proc = LiveProcess(f"daphne-procfile-{port}", [sys.executable if words[0] == "python" else words[0], *words[1:]], env)
    wait_for_port(port, proc=proc)
    return proc, port


def start_daphne(env: dict[str, str], port: int | None = None, extra: list[str] | None = None) -> tuple[LiveProcess, int]:
    port = port or free_port()
    args = [
        sys.executable, "-m", "realtime.daphne",
        "-e", f"tcp:port={port}:interface=127.0.0.1:backlog=4096",
        "--ping-interval", "20", "--ping-timeout", "30",
        "--websocket-max-message-size", "65536", "--websocket-max-frame-size", "65536",
        "--application-close-timeout", "5", "-v", "1",
        *(extra or []),
        "backend.config.asgi:application",
    ]
    proc = LiveProcess(f"daphne-{port}", args, env)
    wait_for_port(port, proc=proc)
    DAPHNES[port] = proc
    return proc, port


# The Daphne last started on each port (a test that holds only the port can still read its hub's numbers).
DAPHNES: dict[int, LiveProcess] = {}


def start_worker(env: dict[str, str], name: str = "w1", concurrency: int = 1, pool: str = "prefork",
                 queues: str = "default,bulk") -> LiveProcess:
    args = [
        sys.executable, "-m", "celery", "-A", "workers.celery", "worker", "-l", "info",
        "-Q", queues, "-n", f"{name}@%h", "--concurrency", str(concurrency), "--pool", pool,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]
    proc = LiveProcess(f"worker-{name}", args, env)
    proc.wait_for_output("ready.", timeout=40)
    return proc


def start_beat(env: dict[str, str]) -> LiveProcess:
    LOGS.mkdir(parents=True, exist_ok=True)
    schedule = LOGS / f"beat-schedule-{os.getpid()}-{int(time.time() * 1000)}"
    args = [sys.executable, "-m", "celery", "-A", "workers.celery", "beat", "-l", "info", "--schedule", str(schedule)]
    proc = LiveProcess("beat", args, env)
    proc.wait_for_output("beat: Starting", timeout=30)
    return proc


class RedisServer:
    """A redis-server on a free port without persistence: a restart loses everything, like a crash."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: LiveProcess | None = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--maxclients", "10000"]
        self.proc = LiveProcess(f"redis-{self.port}", args, {})
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        """SHUTDOWN NOSAVE: every key (group memberships, queued messages) is gone."""
        if self.proc is None or not self.proc.alive:
            return
        try:
            redis.Redis(port=self.port, socket_timeout=5).shutdown(nosave=True)
        except redis.exceptions.ConnectionError:
            pass  # the server closes our connection as it exits
        self.proc.popen.wait(10)
        self.proc.stop()


@contextlib.contextmanager
def own_redis(url: str | None):
    """`url` when given (a server of the caller's own), else a private redis-server on a free port
    for the block, stopped at its end: a benchmark flushes its Redis, and needs nobody to start one."""
    if url:
        yield url
        return
    server = RedisServer()
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}"
    finally:
        server.stop()


def start_relay(env: dict[str, str], name: str = "relay") -> LiveProcess:
    """The relay (workers/relay.py): publishes stranded outbox events, re-enqueues stranded jobs."""
    proc = LiveProcess(name, [sys.executable, "-m", "workers.relay"], env)
    proc.wait_for_output("relay started", timeout=30)
    return proc
