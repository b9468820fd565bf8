"""`virlogd` as a command: --check-config, bad config, environment and flags."""
import os
import subprocess

import pytest

from daemonproc import VIRLOGD, isolated_env


def run(tmp_path, *args, env_extra=None, conf=None):
    env = isolated_env(tmp_path, **(env_extra or {}))
    cmd = [VIRLOGD, *args]
    if conf is not None:
        path = tmp_path / "virlogd.conf"
        path.write_text(conf)
        cmd += ["-f", str(path)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def test_check_config_prints_each_setting_with_its_source_and_exits_0(tmp_path):
    """-t prints `key = value  # from SOURCE` for config, environment and flags."""
    result = run(tmp_path, "-t", "--log-buffer-size", "32",
                 env_extra={"LIBVIRT_LOG_FILTERS": "3:remote 1:+qemu"},
                 conf='log_level = 2\nlog_outputs = "1:file:/tmp/x.log"\n')
    conf = tmp_path / "virlogd.conf"
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        f"log_level = 2  # from {conf}:1",
        'log_filters = "3:remote 1:+qemu"  # from LIBVIRT_LOG_FILTERS',
        f'log_outputs = "1:file:/tmp/x.log"  # from {conf}:2',
        "log_buffer_size = 32  # from --log-buffer-size",
    ]
    runtime = "/run/virlogd" if os.geteuid() == 0 else f"{tmp_path}/xdg_runtime_dir/virlogd"
    assert f'socket_path = "{runtime}/virlogd-sock"  # from default' in lines


def test_check_config_reports_every_problem_and_exits_1(tmp_path):
    """Every problem is reported, then the settings are printed, and the status is 1."""
    result = run(tmp_path, "-t", env_extra={"LIBVIRT_DEBUG": "loud"},
                 conf='log_levle = 1\nlog_filters = "1:a 7:b"\n')
    conf = tmp_path / "virlogd.conf"
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"virlogd: warning: {conf}:1: unknown key 'log_levle' (did you mean 'log_level'?); "
        f"ignored",
        "virlogd: warning: LIBVIRT_DEBUG: invalid priority 'loud' (expected 1-4 or debug, "
        "info, warning, error); ignored",
        f"virlogd: warning: {conf}:2: Invalid priority '7' for filter '7:b' in log_filters "
        f"\"1:a 7:b\"; the entries before it apply, the rest is ignored",
    ]
    assert f'log_filters = "1:a"  # from {conf}:2' in result.stdout.splitlines()


def test_a_config_that_is_not_toml_stops_the_start_with_line_and_column(tmp_path):
    """A malformed file: one error with the parser's position, exit 1, nothing printed."""
    result = run(tmp_path, conf="log_level = 3\nlog_filters = 1:a\nmax_size = 1\n")
    conf = tmp_path / "virlogd.conf"
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"virlogd: error: {conf}: not valid TOML: Expected newline or end of document "
                             f"after a statement "
                             f"(at line 2, column 16)\n")


def test_a_missing_config_named_on_the_command_line_is_an_error(tmp_path):
    """-f FILE that does not exist: exit 1 with a clear sentence."""
    result = run(tmp_path, "-f", str(tmp_path / "absent.conf"))
    assert result.returncode == 1
    assert result.stderr == (f"virlogd: error: cannot read config file "
                             f"{tmp_path}/absent.conf: No such file or directory\n")


@pytest.mark.parametrize("args,message", [
    (["--log-level", "7"], "argument --log-level: invalid priority '7' (expected 1-4 or "
                           "debug, info, warning, error)"),
    (["--log-buffer-size", "-5"], "argument --log-buffer-size: invalid size '-5' (expected "
                                  "kB from 0 to 1048576)"),
    (["--socket", ""], "argument --socket: must not be empty"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_flags_are_usage_errors_with_exit_2(tmp_path, args, message):
    """A bad flag value: argparse's usage line, the reason, exit 2."""
    result = run(tmp_path, *args)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"virlogd: error: {message}"


def test_a_bad_filter_flag_keeps_the_entries_before_it(tmp_path):
    """--log-filters with a bad token warns, names the flag, and keeps the good prefix."""
    result = run(tmp_path, "-t", "--log-filters", "1:a 2:b x")
    assert result.returncode == 1
    assert result.stderr == ("virlogd: warning: --log-filters: Malformed format for filter "
                             "'x' in log_filters \"1:a 2:b x\"; the entries before it apply, "
                             "the rest is ignored\n")
    assert 'log_filters = "1:a 2:b"  # from --log-filters' in result.stdout.splitlines()


def test_verbose_is_shown_as_the_source_of_the_level(tmp_path):
    """-v turns the default 3 into 2, and -t says it was -v."""
    result = run(tmp_path, "-t", "-v")
    assert "log_level = 2  # from -v" in result.stdout.splitlines()


def test_version_and_help(tmp_path):
    """-V prints the version; -h lists the flags."""
    assert run(tmp_path, "-V").stdout == "virlogd 1.0\n"
    helptext = run(tmp_path, "-h").stdout
    for flag in ("--config", "--daemon", "--pid-file", "--verbose", "--log-level",
                 "--log-filters", "--log-outputs", "--log-buffer-size", "--socket",
                 "--admin-socket", "--check-config", "--version"):
        assert flag in helptext


@pytest.mark.parametrize("conf,status,message", [
    # the name matched without regard to case (it once suggested max_size)
    ("LOG_LEVEL = 2\n", 1,
     "virlogd: warning: {conf}:1: unknown key 'LOG_LEVEL' (keys are lower-case: did you mean "
     "'log_level'?); ignored"),
    # a table: virlogd's keys are top-level (it once suggested log_filters)
    ('[logging]\nlog_filters = "1:qemu"\n', 1,
     "virlogd: warning: {conf}:1: [logging] is a table, but virlogd's keys are all "
     "top-level: move log_filters above the first [table] line; ignored"),
    # an unquoted mode: what to write (it once was the parser's bare "Expected newline")
    ("socket_perms = 0666\n", 1,
     'virlogd: error: {conf}:1: not valid TOML: socket_perms = 0666: a TOML number cannot '
     'start with 0; write socket_perms = "0666" (a mode is a string, in quotes)'),
    # a key set twice: which and where (it once said only "Cannot overwrite a value")
    ('log_level = 3\nlog_outputs = "1:stderr"\nlog_level = 1\n', 1,
     "virlogd: error: {conf}:3: not valid TOML: log_level is set twice, on lines 1 and 3; "
     "keep one"),
])
def test_common_config_mistakes_get_an_answer_that_says_what_to_write(tmp_path, conf, status,
                                                                      message):
    """virlogd -t -f FILE, for the mistakes a newcomer makes: one line naming the file, the
    line and the fix."""
    result = run(tmp_path, "-t", conf=conf)
    path = tmp_path / "virlogd.conf"
    assert (result.returncode, result.stderr) == (status, message.format(conf=path) + "\n")
