"""Merging the config file, the environment and the flags, value by value."""
import itertools
import os

import pytest

from virlogd.core import settings as S

# key -> a value in each source (config literal, environment, flag), and the parsed result
SAMPLES = {
    "log_level": {"config": ("2", 2), "env": ("debug", 1), "flag": (4, 4)},
    "log_filters": {"config": ('"1:util"', "1:util"), "env": ("2:qemu", "2:qemu"),
                    "flag": ("3:remote", "3:remote")},
    "log_outputs": {"config": ('"1:file:/tmp/c.log"', "1:file:/tmp/c.log"),
                    "env": ("2:stderr", "2:stderr"), "flag": ("4:journald", "4:journald")},
    "log_buffer_size": {"config": ("16", 16), "flag": (128, 128)},
    "socket_path": {"config": ('"/tmp/c.sock"', "/tmp/c.sock"),
                    "flag": ("/tmp/f.sock", "/tmp/f.sock")},
    "admin_socket_path": {"config": ('"/tmp/c.adm"', "/tmp/c.adm"),
                          "flag": ("/tmp/f.adm", "/tmp/f.adm")},
}
ORDER = ("config", "env", "flag")


def load(tmp_path, key, given):
    conf = tmp_path / "virlogd.conf"
    env, flags = {}, {}
    lines = ["# a comment first, so the key is on line 2"]
    if "config" in given:
        lines.append(f"{key} = {SAMPLES[key]['config'][0]}")
    conf.write_text("\n".join(lines) + "\n")
    if "env" in given:
        env[S.KEYS[key].env] = SAMPLES[key]["env"][0]
    if "flag" in given:
        flags[key] = SAMPLES[key]["flag"][0]
    return S.load(config_file=str(conf), explicit=True, env=env, flags=flags), str(conf)


CASES = [(key, combo) for key, sources in SAMPLES.items()
         for n in (1, 2, 3) for combo in itertools.combinations(
             [s for s in ORDER if s in sources], n)]


@pytest.mark.parametrize("key,given", CASES, ids=[f"{k}-{'+'.join(g)}" for k, g in CASES])
def test_the_latest_source_wins_and_is_named(tmp_path, key, given):
    """config < environment < flags, for every key and every combination of sources."""
    result, conf = load(tmp_path, key, given)
    winner = given[-1]
    assert result.problems == []
    assert result.values[key] == SAMPLES[key][winner][1]
    expected_source = {"config": f"{conf}:2", "env": S.KEYS[key].env,
                       "flag": S.KEYS[key].flag}[winner]
    assert result.sources[key] == expected_source


def test_outputs_are_replaced_not_appended_across_sources(tmp_path):
    """A later source replaces the output list wholesale."""
    result, _ = load(tmp_path, "log_outputs", ("config", "env"))
    assert [str(o) for o in result.outputs] == ["2:stderr"]


def test_an_empty_variable_is_the_same_as_unset(tmp_path):
    """LIBVIRT_DEBUG="" and LIBVIRT_LOG_FILTERS="" leave the config's values alone."""
    conf = tmp_path / "c.conf"
    conf.write_text('log_level = 1\nlog_filters = "1:util"\n')
    result = S.load(config_file=str(conf), explicit=True,
                    env={"LIBVIRT_DEBUG": "", "LIBVIRT_LOG_FILTERS": ""})
    assert (result.log_level, result.values["log_filters"]) == (1, "1:util")
    assert result.sources["log_level"] == f"{conf}:1"


def test_log_level_zero_in_the_config_means_unset(tmp_path):
    """log_level = 0 leaves the default of 3."""
    conf = tmp_path / "c.conf"
    conf.write_text("log_level = 0\n")
    result = S.load(config_file=str(conf), explicit=True, env={})
    assert (result.log_level, result.sources["log_level"], result.problems) == \
        (3, "default", [])


@pytest.mark.parametrize("level,verbose_level", [(4, 2), (3, 2), (2, 2), (1, 1)])
def test_verbose_lowers_a_default_above_info_to_info(tmp_path, level, verbose_level):
    """-v: a default level above 2 becomes 2, as libvirt does; 1 stays 1."""
    result = S.load(read_config_file=False, env={}, flags={"log_level": level}, verbose=True)
    assert result.log_level == verbose_level


def test_libvirtd_conf_logging_lines_are_valid_as_they_stand(tmp_path):
    """libvirtd.conf's logging lines parse unchanged."""
    conf = tmp_path / "libvirtd.conf"
    conf.write_text('log_level = 3\nlog_filters="1:libvirt 1:util 1:qemu"\n'
                    'log_outputs="3:syslog:libvirtd 1:file:/tmp/libvirt.log"\n'
                    'log_buffer_size=0     # trailing comment\n')
    result = S.load(config_file=str(conf), explicit=True, env={})
    assert result.problems == []
    assert result.values["log_filters"] == "1:libvirt 1:util 1:qemu"
    assert [str(o) for o in result.outputs] == ["3:syslog:libvirtd", "1:file:/tmp/libvirt.log"]
    assert result.values["log_buffer_size"] == 0


# -- bad values: each named with where it came from ------------------------------------
BAD_CONFIG = [
    ('log_level = "debug"',
     "C:1: log_level must be an integer from 0 to 4 (0 = unset), not the string \"debug\"; "
     "ignored"),
    ("log_level = 7", "C:1: log_level must be an integer from 0 to 4 (0 = unset), not 7; "
                      "ignored"),
    ("log_buffer_size = -1", "C:1: log_buffer_size must be an integer from 0 to 1048576, "
                             "not -1; ignored"),
    ("log_buffer_size = true", "C:1: log_buffer_size must be an integer from 0 to 1048576, "
                               "not the boolean true; ignored"),
    ("log_filters = 3", "C:1: log_filters must be a string, not 3; ignored"),
    ('socket_perms = "rw"', "C:1: socket_perms must be an octal mode string such as "
                            "\"0666\", not the string \"rw\"; ignored"),
    ('socket_group = "no-such-group-xyz"', "C:1: socket_group names no group on this "
                                           "system: \"no-such-group-xyz\"; ignored"),
    ('log_filter = "1:x"', "C:1: unknown key 'log_filter' (did you mean 'log_filters'?); "
                           "ignored"),
    ("max_sise = 10", "C:1: unknown key 'max_sise' (did you mean 'max_size'?); ignored"),
    # names are matched without regard to case (LOG_LEVEL once suggested max_size)
    ("LOG_LEVEL = 3", "C:1: unknown key 'LOG_LEVEL' (keys are lower-case: did you mean "
                      "'log_level'?); ignored"),
    ('Log_Filters = "1:x"', "C:1: unknown key 'Log_Filters' (keys are lower-case: did you "
                            "mean 'log_filters'?); ignored"),
    ("MAX_SISE = 10", "C:1: unknown key 'MAX_SISE' (did you mean 'max_size'?); ignored"),
    # a table (libvirtd.conf habits in an INI mood): the keys are top-level
    ('[logging]\nlog_filters = "1:x"\nlog_level = 1',
     "C:1: [logging] is a table, but virlogd's keys are all top-level: move log_filters, "
     "log_level above the first [table] line; ignored"),
    ("[extra]\nmine = 1", "C:1: [extra] is a table, but virlogd's keys are all top-level; "
                          "ignored"),
    ('logging.log_outputs = "1:stderr"',
     "C:1: [logging] is a table, but virlogd's keys are all top-level: move log_outputs "
     "above the first [table] line; ignored"),
    ('log_filters = "1:a 5:b 2:c"',
     "C:1: Invalid priority '5' for filter '5:b' in log_filters \"1:a 5:b 2:c\"; the entries "
     "before it apply, the rest is ignored"),
    ('log_outputs = "1:stderr 2:nowhere"',
     "C:1: Invalid destination 'nowhere' for output '2:nowhere' in log_outputs "
     "\"1:stderr 2:nowhere\"; the entries before it apply, the rest is ignored"),
]


@pytest.mark.parametrize("line,message", BAD_CONFIG)
def test_bad_config_values_are_named_with_file_and_line(tmp_path, line, message):
    """Each bad value is one problem naming FILE:LINE, the key and what was wrong."""
    conf = tmp_path / "c.conf"
    conf.write_text(line + "\n")
    result = S.load(config_file=str(conf), explicit=True, env={})
    assert result.fatal is None
    assert result.problems == [message.replace("C:", f"{conf}:")]


def test_the_entries_before_a_bad_token_apply(tmp_path):
    """'1:a 5:b 2:c' keeps 1:a only."""
    result = S.load(read_config_file=False, env={"LIBVIRT_LOG_FILTERS": "1:a 5:b 2:c"})
    assert [str(f) for f in result.filters] == ["1:a"]
    assert result.problems == [
        "LIBVIRT_LOG_FILTERS: Invalid priority '5' for filter '5:b' in log_filters "
        "\"1:a 5:b 2:c\"; the entries before it apply, the rest is ignored"]


@pytest.mark.parametrize("value", ["5", "verbose", "0", "-1"])
def test_an_invalid_libvirt_debug_is_ignored_with_a_warning(value):
    """LIBVIRT_DEBUG=5 keeps the default and says why."""
    result = S.load(read_config_file=False, env={"LIBVIRT_DEBUG": value})
    assert result.log_level == 3
    assert result.problems == [f"LIBVIRT_DEBUG: invalid priority '{value}' (expected 1-4 or "
                               f"debug, info, warning, error); ignored"]


def test_a_file_that_is_not_toml_is_fatal_with_line_and_column(tmp_path):
    """A malformed file stops the start, quoting the parser's line and column."""
    conf = tmp_path / "c.conf"
    conf.write_text('log_level = 3\nlog_filters = "1:a\n')
    result = S.load(config_file=str(conf), explicit=True, env={})
    assert result.fatal == f"{conf}: not valid TOML: Illegal character '\\n' (at line 2, column 19)"


@pytest.mark.parametrize("text,fatal", [
    ("socket_perms = 0666\n", 'C:1: not valid TOML: socket_perms = 0666: a TOML number cannot '
                              'start with 0; write socket_perms = "0666" (a mode is a string, '
                              'in quotes)'),
    ("log_level = 2\nsocket_perms = 0660  # group only\n",
     'C:2: not valid TOML: socket_perms = 0660: a TOML number cannot start with 0; write '
     'socket_perms = "0660" (a mode is a string, in quotes)'),
    ("max_backups = 05\n", "C:1: not valid TOML: max_backups = 05: a TOML number cannot start "
                           "with 0; write max_backups = 5"),
    ('log_level = 3\nlog_filters = "1:x"\nlog_level = 2\n',
     "C:3: not valid TOML: log_level is set twice, on lines 1 and 3; keep one"),
    ('"log_outputs" = "1:stderr"\nlog_outputs = "2:stderr"\n',
     'C:2: not valid TOML: log_outputs is set twice, on lines 1 and 2; keep one'),
])
def test_common_toml_mistakes_say_what_to_write(tmp_path, text, fatal):
    """An unquoted mode and a key set twice: the line, and what to write instead of the
    parser's bare "Expected newline" or "Cannot overwrite a value"."""
    conf = tmp_path / "c.conf"
    conf.write_text(text)
    result = S.load(config_file=str(conf), explicit=True, env={})
    assert result.fatal == fatal.replace("C:", f"{conf}:")


def test_a_missing_explicit_config_is_fatal_but_a_missing_implicit_one_is_not(tmp_path):
    """--config FILE must exist; the default file may be absent."""
    missing = str(tmp_path / "nope.conf")
    assert S.load(config_file=missing, explicit=True, env={}).fatal == \
        f"cannot read config file {missing}: No such file or directory"
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    result = S.load(env=env, uid=1000)
    assert (result.fatal, result.config_file, result.problems) == (None, None, [])


def test_relative_paths_in_the_config_are_relative_to_the_config(tmp_path):
    """socket_path = "run/s" in /x/c.conf means /x/run/s; file outputs likewise."""
    conf = tmp_path / "c.conf"
    conf.write_text('socket_path = "run/s"\nlog_outputs = "1:file:logs/a.log"\n')
    result = S.load(config_file=str(conf), explicit=True, env={}, cwd="/")
    assert result.values["socket_path"] == str(tmp_path / "run" / "s")
    assert [str(o) for o in result.outputs] == [f"1:file:{tmp_path}/logs/a.log"]


def test_render_is_valid_toml_that_reads_back_to_the_same_values(tmp_path):
    """--check-config's output pasted into a config gives the same settings."""
    result = S.load(read_config_file=False, env={"LIBVIRT_LOG_FILTERS": '1:"quoted'},
                    flags={"log_level": 2})
    text = S.render(result)
    conf = tmp_path / "again.conf"
    conf.write_text(text)
    again = S.load(config_file=str(conf), explicit=True, env={})
    assert again.problems == []
    for key in S.KEYS:
        assert again.values[key] == result.values[key], key
    assert 'log_level = 2  # from --log-level' in text.splitlines()
