"""The program name a client gives its records (journald's SYSLOG_IDENTIFIER)."""
import subprocess
import sys

from virlogd.client import client


def test_a_script_is_named_after_its_file(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/myapp", "--flag"])
    assert client.program_name() == "myapp"


def test_python_c_and_a_script_from_stdin_name_nothing(monkeypatch):
    # `python3 -c ...` and `python3 - <<EOF` have no name of their own: the record's source
    # stands in, never a bare "-c" or "-" in journalctl's output
    for argv0 in ("-c", "-", ""):
        monkeypatch.setattr(sys, "argv", [argv0])
        assert client.program_name() is None


def test_a_real_script_read_from_stdin_names_nothing():
    out = subprocess.run([sys.executable, "-"], input=b"from virlogd.client import client\n"
                         b"print(client.program_name())\n", capture_output=True, check=True)
    assert out.stdout == b"None\n"
