"""Start and stop real ``virlogd`` processes for the tests.

Each daemon gets its own runtime, config and cache directories (XDG_* under tmp_path), so
nothing reads or writes the host's /run, /etc or ~/.cache, and every test can run beside the
others. Processes are stopped by their pid, never by name.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from virlogd.sockets import listening

VENV_BIN = Path(sys.executable).parent
VIRLOGD = str(VENV_BIN / "virlogd")
VIRLOG = str(VENV_BIN / "virlog")
ADMIN = str(VENV_BIN / "virlogd-admin")


def isolated_env(tmp_path: Path, **extra: str) -> Dict[str, str]:
    """The environment of a user with private XDG directories and no LIBVIRT_* variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LIBVIRT_", "NOTIFY_SOCKET", "LISTEN_"))}
    for name in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        path = tmp_path / name.lower()
        path.mkdir(exist_ok=True)
        env[name] = str(path)
    env.update(extra)
    return env


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def rss_kb(pid: int) -> int:
    """The resident memory of process *pid*, in kB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def read_to_eof(sock) -> bytes:
    """Everything *sock* receives until the peer closes (a reset counts as closed)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def accepts(path: str) -> bool:
    return listening(path)


class Daemon:
    """One running ``virlogd``; ``socket``/``admin_socket`` are its paths."""

    def __init__(self, tmp_path: Path, args: List[str] = (), *, env: Optional[dict] = None,
                 outputs: Optional[str] = None, stdin=subprocess.DEVNULL,
                 wait: bool = True, name: str = "d") -> None:
        self.dir = tmp_path / name
        self.dir.mkdir(exist_ok=True)
        self.socket = str(self.dir / "virlogd-sock")
        self.admin_socket = str(self.dir / "virlogd-admin-sock")
        self.env = env if env is not None else isolated_env(tmp_path)
        self.stderr_path = self.dir / "stderr"
        cmd = [VIRLOGD, "--socket", self.socket, "--admin-socket", self.admin_socket]
        if outputs is not None:
            cmd += ["--log-outputs", outputs]
        self.cmd = cmd + list(args)
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdin=stdin,
                                     stdout=subprocess.DEVNULL, stderr=self._stderr)
        self.pid = self.proc.pid
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 10.0) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"virlogd exited with {self.proc.returncode}: "
                                     f"{self.stderr()}")
            return accepts(self.socket)
        wait_for(ready, timeout, "virlogd to accept connections")

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def kill(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self._stderr.close()
        return self.proc.returncode

    def virlog(self, *args: str, input: Optional[str] = None) -> subprocess.CompletedProcess:
        return subprocess.run([VIRLOG, "-S", self.socket, *args], input=input, env=self.env,
                              capture_output=True, text=True, timeout=30)

    def admin(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([ADMIN, "-S", self.admin_socket, *args], env=self.env,
                              capture_output=True, text=True, timeout=30)


def read_until(path: Path, needle: str, timeout: float = 10.0) -> str:
    """The text of *path* once it contains *needle*."""
    def found():
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            return None
        return text if needle in text else None
    return wait_for(found, timeout, f"{needle!r} in {path}")
