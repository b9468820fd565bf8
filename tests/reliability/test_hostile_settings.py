"""Hostile config files, environment values and flags: always a clear answer, never a crash."""
import os
import subprocess

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from daemonproc import VIRLOGD, isolated_env
from virlogd.core import settings as S
from virlogd.cli.virlogd import main

KEYS = sorted(S.KEYS)
values = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70), st.booleans(),
    st.text(max_size=40), st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=3))


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
            .encode("ascii", "backslashreplace").decode().replace("\\x", "\\u00") + '"'
    return repr(v).replace("'", '"')


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.one_of(st.sampled_from(KEYS), st.from_regex(r"[a-z_]{1,12}", fullmatch=True)),
                       values, max_size=6))
def test_any_typed_config_gives_values_of_the_right_type_or_named_problems(tmp_path, table):
    """Whatever the types, each key ends up valid or is named in a problem with its line."""
    conf = tmp_path / "fuzz.conf"
    text = "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items())
    conf.write_text(text, encoding="utf-8")
    result = S.load(config_file=str(conf), explicit=True, env={})
    if result.fatal:
        assert result.fatal.startswith(f"{conf}: not valid TOML: ")
        return
    assert 1 <= result.log_level <= 4
    assert isinstance(result.values["log_buffer_size"], int)
    assert 0 <= result.values["log_buffer_size"] <= S.MAX_BUFFER_KB
    for problem in result.problems:
        assert problem.startswith(f"{conf}:"), problem
        assert problem.endswith(("; ignored", "; the entries before it apply, the rest is "
                                              "ignored")), problem


@hsettings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_as_a_config_file_never_raise(tmp_path_factory, blob):
    """Random bytes: either settings with named problems, or one fatal TOML error."""
    conf = tmp_path_factory.mktemp("c") / "fuzz.conf"
    conf.write_bytes(blob)
    result = S.load(config_file=str(conf), explicit=True, env={})
    assert result.fatal is None or result.fatal.startswith(f"{conf}: not valid TOML: ")


env_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                          blacklist_characters="\x00"), max_size=60)


@hsettings(max_examples=300, deadline=None)
@given(env_text, env_text, env_text)
def test_any_environment_values_give_a_usable_result(debug, filters, outputs):
    """LIBVIRT_* with any text: a valid level, parsed prefixes, problems that name the variable."""
    env = {"LIBVIRT_DEBUG": debug, "LIBVIRT_LOG_FILTERS": filters,
           "LIBVIRT_LOG_OUTPUTS": outputs}
    result = S.load(read_config_file=False, env=env)
    assert 1 <= result.log_level <= 4
    for problem in result.problems:
        assert problem.split(":")[0] in env, problem


@hsettings(max_examples=150, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["-v", "-t", "--log-level", "--log-filters", "--log-outputs",
                                 "--log-buffer-size", "--socket", "-f", "x", "1", "-1",
                                 "9:a", "1:file:", "", "debug", "\x7f", "--bogus"]),
                max_size=6))
def test_any_flags_end_in_an_exit_status_not_a_traceback(capsys, argv):
    """Random flag sequences with -t: exit 0, 1 or 2 (usage), never an exception."""
    try:
        status = main(["-t", *argv])
    except SystemExit as exit_:
        status = exit_.code
    assert status in (0, 1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_a_config_that_is_a_directory_or_unreadable_is_a_clear_error(tmp_path):
    """-f pointing at a directory: one sentence, exit 1."""
    result = subprocess.run([VIRLOGD, "-t", "-f", str(tmp_path)], env=isolated_env(tmp_path),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr == f"virlogd: error: cannot read config file {tmp_path}: Is a directory\n"
