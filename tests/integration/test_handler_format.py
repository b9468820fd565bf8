"""The README's ``basicConfig`` example, as a reader runs it: the message travels alone.

``logging.basicConfig(handlers=[virlogd.VirlogdHandler()])`` gives every handler without a
formatter its default ``levelname:name:message`` format; the level and the source are fields
of the record already, so the handler keeps its message alone. A format the program asks for
is kept. Checked with a real daemon writing a real file.
"""
import re
import subprocess
import sys
import textwrap

import pytest

from daemonproc import Daemon

MODES = [pytest.param({}, id="c"), pytest.param({"VIRLOGD_PURE_PYTHON": "1"}, id="pure")]


def logged(tmp_path, mode, setup):
    """Run the README's example with *setup* as its basicConfig arguments; the daemon's
    file line for the record, from the level on."""
    log = tmp_path / "out.log"
    daemon = Daemon(tmp_path, outputs=f"1:file:{log}", args=["--log-level", "1"])
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import logging, sys, virlogd
            handler = virlogd.VirlogdHandler(sys.argv[1])
            logging.basicConfig(handlers=[handler], {setup})
            logging.getLogger("qemu.monitor").error("probe failed")
            print(handler.formatter is None)
        """), daemon.socket], env=dict(daemon.env, **mode), capture_output=True, text=True,
            timeout=30)
    finally:
        daemon.stop()
    assert (proc.returncode, proc.stderr) == (0, "")
    line, = re.findall(r"^\S+ \S+: \d+: (error : .*)$", log.read_text(), re.M)
    return proc.stdout, line


@pytest.mark.parametrize("mode", MODES)
def test_basic_config_s_default_format_is_not_put_in_the_message(tmp_path, mode):
    out, line = logged(tmp_path, mode, "level=logging.INFO")
    assert out == "True\n"                  # no formatter: the C path stays in use
    assert line.endswith(" : probe failed")
    assert "ERROR:qemu.monitor:" not in line


@pytest.mark.parametrize("mode", MODES)
def test_a_format_the_program_chose_is_kept(tmp_path, mode):
    out, line = logged(tmp_path, mode, "format='%(levelname)s %(message)s!'")
    assert out == "False\n"
    assert line.endswith(" : ERROR probe failed!")
