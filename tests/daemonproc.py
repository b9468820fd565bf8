"""Start and stop real ``virlogd`` processes for the tests.

Each daemon gets its own runtime, config and cache directories (XDG_* under tmp_path), so
nothing reads or writes the host's /run, /etc or ~/.cache, and every test can run beside the
others. Processes are stopped by their pid, never by name.
"""
from __future__ import annotations

import atexit
import importlib.metadata
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from virlogd.daemon.sockets import listening

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


# -- running a command as another user -------------------------------------------------------
# A test that runs a client as another uid cannot use this checkout's .venv: a clone under a
# 0700 home (/root/virlogd) is out of that user's reach, and Python then starts without
# virlogd (ModuleNotFoundError). So such commands run from a copy of virlogd and its runtime
# dependencies, with its own interpreter and console scripts, in a directory every user may
# read, made once per test session and removed at its end.
OTHER_USER = "virlogd-test"


def other_user() -> pwd.struct_passwd:
    """The unprivileged account the tests run clients as (created if absent; needs root)."""
    try:
        return pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", OTHER_USER], check=True, capture_output=True)
        return pwd.getpwnam(OTHER_USER)


_readable_root: Optional[Path] = None


def _runtime_distributions() -> List[importlib.metadata.Distribution]:
    """virlogd's installed runtime dependencies, recursively (test extras left out)."""
    from packaging.requirements import Requirement
    seen: Dict[str, importlib.metadata.Distribution] = {}
    todo = ["virlogd"]
    while todo:
        name = todo.pop()
        dist = importlib.metadata.distribution(name)
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    del seen["virlogd"]          # installed in editable mode: copied from the source below
    return list(seen.values())


def readable_install() -> Path:
    """A directory any user may read with ``bin/python`` (a venv of the base interpreter) and
    ``bin/virlogd``, ``bin/virlog``, ``bin/virlogd-admin``, running this checkout's virlogd
    (its compiled module included). Made on first use, removed when the test process exits."""
    global _readable_root
    if _readable_root is not None:
        return _readable_root
    root = Path(tempfile.mkdtemp(prefix="virlogd-tests.", dir="/var/tmp"))
    atexit.register(shutil.rmtree, root, True)
    root.chmod(0o755)
    venv = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True)
    site = Path(subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    for dist in _runtime_distributions():
        for rel in dist.files or ():
            src = Path(dist.locate_file(rel))
            if ".." in rel.parts or "__pycache__" in rel.parts or not src.is_file():
                continue            # console scripts of the dependencies, byte code
            dest = site / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    package = Path(importlib.import_module("virlogd").__file__).parent
    shutil.copytree(package, site / "virlogd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.h"))
    for ep in importlib.metadata.distribution("virlogd").entry_points:
        if ep.group != "console_scripts":
            continue
        module, func = ep.value.split(":")
        script = venv / "bin" / ep.name
        script.write_text(f"#!{venv / 'bin' / 'python'}\n"
                          f"import sys\nfrom {module} import {func}\nsys.exit({func}())\n")
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    for ep in importlib.metadata.distribution("virlogd").entry_points:
        if ep.group == "console_scripts":
            (venv / "bin" / ep.name).chmod(0o755)
    _readable_root = venv
    return venv


def as_other_user_cmd(user: Union[pwd.struct_passwd, int], cmd: Sequence[str]) -> List[str]:
    """*cmd* run as *user* (a passwd entry or a uid, e.g. 65534 for nobody) with setpriv, its
    primary group and no supplementary groups. A first word that is this venv's python or one
    of its virlogd commands (``sys.executable``, ``VIRLOGD``, ``VIRLOG``, ``ADMIN``) is swapped
    for the same program of ``readable_install()``, so it runs from any clone. Run it with a
    cwd the user may enter if it reads relative paths."""
    entry = user if isinstance(user, pwd.struct_passwd) else None
    uid = entry.pw_uid if entry else int(user)
    gid = entry.pw_gid if entry else _gid_of(uid)
    cmd = list(cmd)
    first = cmd[0] if cmd else ""
    if first == sys.executable or Path(first).parent == VENV_BIN:
        name = "python" if first == sys.executable else Path(first).name
        cmd[0] = str(readable_install() / "bin" / name)
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *cmd]


def _gid_of(uid: int) -> int:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid
