"""Each setting is an attribute of its own type: whatever a config file holds, the daemon
reads an int where it expects an int (settings.max_clients, settings.log_buffer_size...)."""
import typing

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from virlogd.core import settings as S

HINTS = typing.get_type_hints(S.Settings)


def declared(key):
    return typing.get_args(HINTS[key]) or (HINTS[key],)


def test_every_key_is_a_typed_attribute_in_the_order_check_config_prints():
    """KEYS and Settings name the same keys, in the same order, none typed Any or object."""
    attributes = [name for name in HINTS if name in S.KEYS]
    assert attributes == list(S.KEYS)
    for key in S.KEYS:
        assert set(declared(key)) <= {int, str, type(None)}, (key, HINTS[key])


def test_the_defaults_have_their_declared_types():
    result = S.load(read_config_file=False, env={})
    for key in S.KEYS:
        assert isinstance(getattr(result, key), declared(key)), key
    assert (result.log_level, result.max_clients, result.socket_perms) == (3, 1024, 0o666)


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value).replace("'", '"')


VALUES = st.one_of(st.integers(min_value=-2**64, max_value=2**64), st.booleans(),
                   st.text(alphabet="abcxyz019/ _-:+", max_size=20),
                   st.floats(allow_nan=False, allow_infinity=False),
                   st.lists(st.integers(), max_size=2))


@hsettings(max_examples=200, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(sorted(S.KEYS)), VALUES, max_size=8))
def test_any_config_leaves_every_key_of_its_declared_type(tmp_path, table):
    """A value of the wrong type is a named problem; the key keeps a value of its type."""
    conf = tmp_path / "typed.conf"
    conf.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in table.items()))
    result = S.load(config_file=str(conf), explicit=True, env={})
    assert result.fatal is None
    for key in S.KEYS:
        assert isinstance(getattr(result, key), declared(key)), (key, getattr(result, key))
        assert result.values[key] is getattr(result, key)


def test_a_flag_of_the_wrong_type_is_refused_naming_the_key():
    """The argument parser types each flag; a caller that passes a string for a number is
    told so at once, not when the daemon first compares it."""
    with pytest.raises(TypeError, match=r"^log_buffer_size takes int, not str "
                                        r"\(--log-buffer-size\)$"):
        S.load(read_config_file=False, env={}, flags={"log_buffer_size": "64"})
