"""A newcomer's first hour: the README's two commands, the process name pidof finds,
``--version``, ``make install`` putting the commands on PATH, and the man pages, all checked
with the real commands (pidof, man, groff, bash)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import virlogd
from conftest import require_real
from daemonproc import ADMIN, VIRLOG, VIRLOGD, Daemon, isolated_env, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import manpages  # noqa: E402  (scripts/manpages.py, the generator under test)

PAGES = {"virlogd": "man8/virlogd.8", "virlog": "man1/virlog.1",
         "virlogd-admin": "man8/virlogd-admin.8", "virlogd.conf": "man5/virlogd.conf.5"}


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        require_real(f"{program} is not installed (scripts/setup.sh installs it)")
    return path


# -- the process name --------------------------------------------------------------------------
def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def _argv(pid: int) -> list:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().rstrip(b"\0").split(b"\0")]


def _pidof(name: str) -> list:
    done = subprocess.run([need("pidof"), name], capture_output=True, text=True, timeout=30)
    return [int(p) for p in done.stdout.split()]


def test_pidof_finds_the_daemon_started_by_its_console_script(tmp_path):
    """`pidof virlogd` names the daemon (argv[0] is "virlogd", not the interpreter), and
    ps/top show "virlogd" with the flags it was given."""
    d = Daemon(tmp_path, outputs="1:stderr")
    try:
        assert d.pid in _pidof("virlogd")
        assert _comm(d.pid) == "virlogd"
        assert _argv(d.pid) == ["virlogd", *d.cmd[1:]]
        # the name found is the daemon's: a signal sent to it is handled (SIGUSR2 dumps)
        d.kill(signal.SIGUSR2)
        wait_for(lambda: "dumping internal log buffer" in d.stderr(), 10, "the dump")
    finally:
        assert d.stop() == 0


def test_pidof_finds_the_daemon_started_as_python_m_virlogd(tmp_path):
    """`python -m virlogd` is named virlogd too (comm and argv[0])."""
    sock, admin_sock = str(tmp_path / "s"), str(tmp_path / "a")
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "virlogd", "--socket", sock,
                                 "--admin-socket", admin_sock, "--log-outputs", "1:stderr"],
                                env=isolated_env(tmp_path), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, 10, "the socket")
        assert proc.poll() is None, (tmp_path / "stderr").read_text()
        assert proc.pid in _pidof("virlogd")
        assert _comm(proc.pid) == "virlogd"
        assert _argv(proc.pid) == ["virlogd", "--socket", sock, "--admin-socket", admin_sock,
                                   "--log-outputs", "1:stderr"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_the_command_line_is_never_made_longer():
    """The new command line fits the old one's space, padded with NULs; if the arguments do
    not fit, the name alone; if not even that, nothing is written."""
    from virlogd.daemon.proctitle import command_line
    assert command_line("virlogd", ["-v"], 16) == b"virlogd\0-v\0" + b"\0" * 5
    assert command_line("virlogd", ["--socket", "/x"], 10) == b"virlogd\0\0\0"
    assert command_line("virlogd", [], 4) is None


# -- --version -----------------------------------------------------------------------------
@pytest.mark.parametrize("program", [VIRLOGD, VIRLOG, ADMIN])
@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_every_command_prints_its_version(program, flag):
    done = subprocess.run([program, flag], capture_output=True, text=True, timeout=30)
    name = os.path.basename(program)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{name} {virlogd.__version__}\n",
                                                           "")


# -- make install ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """scripts/install.sh (what make install runs) into a DESTDIR."""
    dest = tmp_path_factory.mktemp("destdir")
    done = subprocess.run(["bash", "scripts/install.sh"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, DESTDIR=str(dest)))
    assert done.returncode == 0, done.stderr
    return dest


def test_install_puts_the_three_commands_on_path(installed, tmp_path):
    """The README's bare `virlog` and `virlogd-admin` work after make install."""
    bindir = installed / "usr" / "local" / "bin"
    env = isolated_env(tmp_path, PATH=f"{bindir}:/usr/bin:/bin")
    for name in ("virlogd", "virlog", "virlogd-admin"):
        assert shutil.which(name, path=env["PATH"]) == str(bindir / name)
        done = subprocess.run([name, "--version"], env=env, capture_output=True, text=True,
                              timeout=30)
        assert (done.returncode, done.stdout) == (0, f"{name} {virlogd.__version__}\n")
    d = Daemon(tmp_path, outputs=f"1:file:{tmp_path / 'out.log'}")
    try:
        done = subprocess.run(["virlog", "-S", d.socket, "-p", "warning", "from PATH"],
                              env=env, capture_output=True, text=True, timeout=30)
        assert (done.returncode, done.stderr) == (0, "")
        assert "from PATH" in (tmp_path / "out.log").read_text()
        done = subprocess.run(["virlogd-admin", "-S", d.admin_socket, "daemon-log-level"],
                              env=env, capture_output=True, text=True, timeout=30)
        assert (done.returncode, done.stdout) == (0, " Logging level: 3\n")
    finally:
        assert d.stop() == 0


def test_install_puts_the_man_pages_where_man_finds_them(installed, pages):
    """`man virlogd` (and the three others) work with the installed tree on MANPATH."""
    mandir = installed / "usr" / "local" / "share" / "man"
    for name, rel in PAGES.items():
        assert (mandir / rel).read_text() == (pages / rel).read_text()
        done = subprocess.run([need("man"), "-M", str(mandir), "-w", name],
                              capture_output=True, text=True, timeout=30)
        assert (done.returncode, done.stdout) == (0, f"{mandir / rel}\n")


# -- the man pages ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """The pages scripts/manpages.py writes (run as a program, as install.sh runs it)."""
    out = tmp_path_factory.mktemp("man")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "manpages.py"), str(out)],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    return out


def rendered(page: Path, width: int = 80) -> str:
    """`man -l PAGE` as a reader sees it, with every groff warning enabled (none allowed)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MANWIDTH": str(width),
           "LC_ALL": "C.UTF-8", "MAN_KEEP_FORMATTING": "", "MANPAGER": "cat", "PAGER": "cat"}
    done = subprocess.run([need("man"), "--warnings=w", "-l", str(page)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, ""), page
    return done.stdout


@pytest.mark.parametrize("name", sorted(PAGES))
def test_each_man_page_renders_without_a_warning(pages, name):
    page = pages / PAGES[name]
    for width in (60, 80, 132):
        text = rendered(page, width)
        assert re.search(rf"^NAME\n\s+{re.escape(name)} - \S", text, re.M), text[:300]
    done = subprocess.run([need("groff"), "-ww", "-man", "-Tutf8", "-z", str(page)],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _help_entries(help_text: str) -> list:
    """The (invocation, help) pairs of an argparse --help text: entries start at two spaces of
    indent, their help continues on deeper lines."""
    entries = []
    for raw in help_text.splitlines():
        if re.match(r"^  \S", raw):
            head, _, rest = raw.strip().partition("  ")
            entries.append([head, rest.strip()])
        elif re.match(r"^   +\S", raw) and entries:
            entries[-1][1] += " " + raw.strip()
        elif not raw.strip() or not raw.startswith(" "):
            continue
    return [(head, text) for head, text in entries]


@pytest.mark.parametrize("program", [VIRLOGD, VIRLOG, ADMIN])
def test_a_man_page_says_what_help_says(pages, program):
    """Every option of `--help` is in the page, with the same help text: both come from the
    parser, so they cannot drift."""
    if os.geteuid() != 0:
        pytest.skip("--help shows this user's default paths; the pages show root's")
    name = os.path.basename(program)
    env = {"PATH": os.environ.get("PATH", ""), "COLUMNS": "80", "LC_ALL": "C.UTF-8"}
    help_text = subprocess.run([program, "--help"], env=env, capture_output=True, text=True,
                               timeout=30, check=True).stdout
    page = _squeeze(rendered(pages / PAGES[name], 200))
    entries = _help_entries(help_text.split("options:", 1)[1])
    assert len(entries) >= 3
    for head, text in entries:
        assert _squeeze(head) in page, head
        assert _squeeze(text) in page, text


def test_the_config_page_documents_every_key_virlogd_knows(pages):
    """etc/virlogd.conf documents exactly the keys the daemon accepts, and virlogd.conf(5)
    has an entry for each, with its comment."""
    from virlogd.core.settings import KEYS
    conf = (ROOT / "etc" / "virlogd.conf").read_text()
    assert sorted(set(manpages.documented_keys(conf))) == sorted(KEYS)
    text = rendered(pages / PAGES["virlogd.conf"], 200)
    headings = set()
    for entry in re.findall(r"^       (\S.*)$", text, re.M):
        headings.update(k.strip() for k in entry.split(","))
    assert set(KEYS) <= headings
    assert _squeeze("Maximum number of connected clients; further connections are refused") \
        in _squeeze(text)


def test_the_unit_names_the_man_pages(pages):
    """The man pages the units' Documentation= lines name exist."""
    named = []
    for unit in sorted((ROOT / "systemd").iterdir()):
        for docs in re.findall(r"^Documentation=(.*)$", unit.read_text(), re.M):
            named += [d for d in docs.split() if d.startswith("man:")]
    for doc in named:
        name, section = re.match(r"man:([\w.-]+)\((\d)\)", doc).groups()
        assert (pages / f"man{section}" / f"{name}.{section}").exists(), doc


# -- the run command -------------------------------------------------------------------------
def test_run_says_where_it_listens_and_shows_the_readmes_next_step(tmp_path):
    """./run prints what it listens on, where records go and how to stop; the README's next
    step (`virlog -S .run/virlogd-sock "hello"`, priority info) shows on its terminal; Ctrl-C
    (SIGINT) stops it with status 0."""
    clone = tmp_path / "clone"
    clone.mkdir()
    # ./run from a copy of the checkout's scripts, using this checkout's installed .venv
    for name in ("run",):
        shutil.copy2(ROOT / name, clone / name)
    (clone / "scripts").mkdir()
    (clone / "scripts" / "setup.sh").write_text("#!/bin/bash\nexit 0\n")   # setup: done
    (clone / ".venv").symlink_to(ROOT / ".venv")
    env = isolated_env(tmp_path)
    out = tmp_path / "run.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen(["./run"], cwd=clone, env=env, stdin=subprocess.DEVNULL,
                                stdout=f, stderr=subprocess.STDOUT)
    try:
        sock = clone / ".run" / "virlogd-sock"
        wait_for(lambda: _accepts(str(sock)) or proc.poll() is not None, 20, "./run's socket")
        assert proc.poll() is None, out.read_text()
        done = subprocess.run([VIRLOG, "-S", ".run/virlogd-sock", "hello"], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=30)
        assert (done.returncode, done.stderr) == (0, "")
        wait_for(lambda: re.search(r": info : (virlog : )?hello\n", out.read_text()), 10,
                 "the record on ./run's terminal")
    finally:
        proc.send_signal(signal.SIGINT)
        status = proc.wait(20)
    text = out.read_text()
    first = text.splitlines()[0]
    assert first == ('run: virlogd in the foreground: clients connect to .run/virlogd-sock, '
                     'virlogd-admin to .run/virlogd-admin-sock; level 2, outputs "1:stderr"; '
                     'Ctrl-C stops it')
    assert f"virlogd started (pid {proc.pid}), listening on {sock}" in text
    assert status == 0


def _accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def test_the_readme_names_the_two_commands_and_ci_runs_the_test_one():
    """The README's commands are ./run and ./test; .ci/run calls exactly the test one; make's
    targets are the same commands."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## The two commands.*?```sh\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["./run", "./test"]
    for command in commands:
        assert os.access(ROOT / command[2:], os.X_OK)
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == "./test"
    makefile = (ROOT / "Makefile").read_text()
    assert "run:\n\tbash ./run\n" in makefile and "test:\n\tbash ./test\n" in makefile


def test_the_readme_lists_every_document_of_docs():
    readme = (ROOT / "README.md").read_text()
    docs_list = readme.split("## Documentation", 1)[1]
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"`docs/{doc.name}`" in docs_list, doc.name


def test_the_readmes_message_id_examples_agree():
    """journalctl matches MESSAGE_ID literally: every example uses the same spelling."""
    readme = (ROOT / "README.md").read_text()
    ids = set(re.findall(r"MESSAGE_ID[=\"': ]+\"?([0-9a-f-]{32,36})", readme))
    ids |= set(re.findall(r"message_id=\"([0-9a-f-]{32,36})\"", readme))
    assert len(ids) == 1, ids


# -- scripts/setup.sh and another apt ----------------------------------------------------------
def _setup_alone(tree: Path) -> None:
    """scripts/setup.sh in *tree*, the other scripts it may call as stand-ins doing nothing."""
    (tree / "scripts").mkdir(parents=True)
    for script in (ROOT / "scripts").iterdir():
        if script.suffix == ".sh":
            (tree / "scripts" / script.name).write_text("exit 0\n")
    shutil.copy2(ROOT / "scripts" / "setup.sh", tree / "scripts" / "setup.sh")


def test_setup_waits_for_another_apt_instead_of_failing(tmp_path):
    """On a new machine another apt may hold the locks: setup.sh asks apt-get to wait for
    dpkg's lock (DPkg::Lock::Timeout=600) and retries `apt-get update`, whose lists lock that
    option does not cover, instead of stopping at "Could not get lock". Run against stand-ins
    for dpkg-query, apt-get, sleep and the venv's python, so the host's packages are not
    touched."""
    if os.geteuid() != 0:
        pytest.skip("setup.sh installs packages only as root")
    tree, shims, log = tmp_path / "tree", tmp_path / "bin", tmp_path / "calls"
    _setup_alone(tree)
    (tree / ".venv" / "bin").mkdir(parents=True)
    (tree / ".venv" / ".virlogd-installed").write_text("")
    shims.mkdir()

    def shim(path: Path, body: str) -> None:
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)

    shim(tree / ".venv" / "bin" / "python", 'echo "python $*" >> "$CALLS"\n')
    # every package installed but make
    shim(shims / "dpkg-query", '[ "${@: -1}" = make ] && exit 1\n'
                               'printf "install ok installed"\n')
    shim(shims / "sleep", 'echo "sleep $*" >> "$CALLS"\n')
    shim(shims / "apt-get", '''echo "apt-get $*" >> "$CALLS"
case "$*" in
  *update*) n=$(grep -c "update" "$CALLS")
            if [ "$n" -le 2 ]; then
              echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2
              exit 100
            fi ;;
esac
''')
    env = dict(os.environ, PATH=f"{shims}:{os.environ['PATH']}", CALLS=str(log))
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("setup: installing make\n")
    assert done.stderr == "setup: waiting for another apt to finish\n" * 2
    calls = [c for c in log.read_text().splitlines() if not c.startswith("python")]
    assert calls == [
        "apt-get -o DPkg::Lock::Timeout=600 update -qq",
        "sleep 10",
        "apt-get -o DPkg::Lock::Timeout=600 update -qq",
        "sleep 10",
        "apt-get -o DPkg::Lock::Timeout=600 update -qq",
        "apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends make"]


def test_setup_stops_at_an_apt_error_that_is_not_a_lock(tmp_path):
    """Any other apt failure is shown as apt said it, and setup.sh stops (exit 1)."""
    if os.geteuid() != 0:
        pytest.skip("setup.sh installs packages only as root")
    tree, shims = tmp_path / "tree", tmp_path / "bin"
    _setup_alone(tree)
    shims.mkdir()
    for name, body in (("dpkg-query", "exit 1\n"),
                       ("apt-get", 'echo "E: The repository is not signed." >&2; exit 100\n')):
        (shims / name).write_text("#!/bin/bash\n" + body)
        (shims / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{shims}:{os.environ['PATH']}")
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stderr) == (1, "E: The repository is not signed.\n")
