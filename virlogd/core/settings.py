"""Settings: the config file, then the ``LIBVIRT_*`` environment, then the flags.

Merged value by value; a later source replaces a value wholesale, and every value remembers
where it came from (``/etc/virlogd.conf:3``, ``LIBVIRT_DEBUG``, ``--log-level``), because the
first question an administrator asks of a daemon is "why is it doing that?".

Nothing here touches the outside world except reading the one config file: the environment
and the flags are passed in, so tests ask "what would this combination give" directly.
Problems never raise: they are collected as sentences (``problems``) and the caller decides,
the daemon printing them as warnings, ``--check-config`` turning them into exit status 1.
The one exception is a file that cannot be read or is not TOML (``fatal``): then there is no
way to know what the administrator meant, and the start stops.
"""
from __future__ import annotations

import difflib
import grp
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple, get_args, get_type_hints

from . import defaults
from .priority import parse_priority
from .specs import FilterSpec, OutputSpec, SpecError, format_filters, format_outputs, \
    parse_filters, parse_outputs

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:                                  # pragma: no cover - Python 3.9 and 3.10
    import tomli as _toml

DEFAULT_LEVEL = 3
DEFAULT_BUFFER_KB = 64
MAX_BUFFER_KB = 1024 * 1024            # 1 GiB: beyond this it is a typo, not a buffer
# max_pending_size: bytes the daemon holds in incomplete frames, all clients together. The
# least is one whole frame (wire.MAX_FRAME and its 4-byte length), or a big record never fits.
MIN_PENDING = 4 * 1024 * 1024 + 4
DEFAULT_PENDING = 64 * 1024 * 1024


# -- type checks: each returns the value to use, or raises ValueError(why) --------------
def _int_in(low: int, high: int, what: str) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be {what}, not {_describe(value)}")
        if not low <= value <= high:
            raise ValueError(f"must be {what}, not {value}")
        return value
    return check


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_describe(value)}")
    return value


def _path(value: object) -> str:
    text = _string(value)
    if not text:
        raise ValueError("must be a path, not an empty string")
    return text


def _perms(value: object) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3}", value):
        raise ValueError(f'must be an octal mode string such as "0666", not '
                         f'{_describe(value)}')
    return int(value, 8)


def _group(value: object) -> str:
    name = _string(value)
    try:
        grp.getgrnam(name)
    except KeyError:
        raise ValueError(f'names no group on this system: "{name}"') from None
    return name


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


@dataclass(frozen=True)
class Key:
    """How one key is read: its check (the value a config table gives it -> the value to
    use, of the type of the ``Settings`` attribute of the same name), and the variable and
    flag that can replace it."""
    name: str
    check: Callable[[object], object]
    env: Optional[str] = None
    flag: Optional[str] = None


KEYS: Dict[str, Key] = {k.name: k for k in (
    Key("log_level", _int_in(0, 4, "an integer from 0 to 4 (0 = unset)"), "LIBVIRT_DEBUG",
        "--log-level"),
    Key("log_filters", _string, "LIBVIRT_LOG_FILTERS", "--log-filters"),
    Key("log_outputs", _string, "LIBVIRT_LOG_OUTPUTS", "--log-outputs"),
    Key("log_buffer_size", _int_in(0, MAX_BUFFER_KB, f"an integer from 0 to {MAX_BUFFER_KB}"),
        None, "--log-buffer-size"),
    Key("socket_path", _path, None, "--socket"),
    Key("socket_perms", _perms),
    Key("socket_group", _group),
    Key("admin_socket_path", _path, None, "--admin-socket"),
    Key("syslog_socket_path", _path),
    Key("max_size", _int_in(0, 2**63 - 1, "a size in bytes, 0 or more")),
    Key("max_backups", _int_in(0, 1000, "an integer from 0 to 1000")),
    Key("max_clients", _int_in(1, 65536, "an integer from 1 to 65536")),
    Key("max_pending_size", _int_in(MIN_PENDING, 2**63 - 1,
                                    f"a size in bytes, {MIN_PENDING} or more")),
    Key("remote_ca_file", _path),
    Key("remote_queue_size", _int_in(1, 10_000_000, "an integer from 1 to 10000000")),
)}

# Keys that hold paths: a relative path in the config is relative to the config file's
# directory (where its author was looking), on the command line to the working directory.
PATH_KEYS = ("socket_path", "admin_socket_path", "syslog_socket_path", "remote_ca_file")


@dataclass
class Settings:
    """Every key's effective value, as an attribute of the key's name and type (the
    defaults are the values below), and where each came from.

    ``load`` sets values by name, each after its key's check (or, for a flag, the argument
    parser's), through ``_set``, which refuses a value not of the declared type: whatever
    the config file held, each attribute holds the type it is declared with."""
    log_level: int = 0                # 0 = unset; after load the effective default priority
                                      # (DEFAULT_LEVEL if unset, -v applied)
    log_filters: str = ""             # after load, the filters that apply, as text
    log_outputs: str = ""             # likewise the outputs
    log_buffer_size: int = DEFAULT_BUFFER_KB
    socket_path: str = ""             # load sets the default, defaults.socket_path
    socket_perms: int = 0o666
    socket_group: Optional[str] = None
    admin_socket_path: str = ""       # load sets the default, defaults.admin_socket_path
    syslog_socket_path: Optional[str] = None
    max_size: int = 0
    max_backups: int = 3
    max_clients: int = 1024
    max_pending_size: int = DEFAULT_PENDING
    remote_ca_file: Optional[str] = None
    remote_queue_size: int = 10000

    # key -> "default", "FILE:LINE", "VAR", "--flag"
    sources: Dict[str, str] = field(default_factory=lambda: dict.fromkeys(KEYS, "default"))
    problems: List[str] = field(default_factory=list)
    fatal: Optional[str] = None                   # the start cannot go on
    config_file: Optional[str] = None             # the file that was read, if any
    filters: List[FilterSpec] = field(default_factory=list)
    outputs: List[OutputSpec] = field(default_factory=list)

    @property
    def values(self) -> Dict[str, object]:
        """Key name -> value, in ``KEYS``' order: for code that goes through every key."""
        return {name: getattr(self, name) for name in KEYS}

    def _set(self, name: str, value: object, source: str) -> None:
        declared = _DECLARED[name]
        if not isinstance(value, declared):
            raise TypeError(f"{name} takes {' or '.join(t.__name__ for t in declared)}, "
                            f"not {type(value).__name__} ({source})")
        setattr(self, name, value)
        self.sources[name] = source


# key -> the types its Settings attribute accepts (Optional[str] -> (str, NoneType))
_DECLARED: Dict[str, Tuple[type, ...]] = {
    name: get_args(hint) or (hint,) for name, hint in get_type_hints(Settings).items()
    if name in KEYS}


# -- the config file --------------------------------------------------------------------
_KEY = r"([A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')"
_KEY_LINE = re.compile(r"\s*" + _KEY + r"\s*[=.]")          # key = ..., or dotted.key = ...
_TABLE_LINE = re.compile(r"\s*\[\[?\s*" + _KEY)              # [table] or [[array]]


def _key_lines(text: str) -> Dict[str, int]:
    """Line of each top-level ``key =`` and of each table's ``[header]`` (tomllib keeps no
    positions; libvirtd.conf keys are plain names at the start of a line, which is what we
    look for)."""
    lines: Dict[str, int] = {}
    in_table = False
    for number, line in enumerate(text.splitlines(), 1):
        found = _TABLE_LINE.match(line)
        if found:
            in_table = True                       # its keys are not top level
        elif not in_table:
            found = _KEY_LINE.match(line)
        if found:
            lines.setdefault(found.group(1).strip("\"'"), number)
    return lines


class TomlError(ValueError):
    """The config is not TOML: ``str()`` says why, ``line`` where when we could tell."""

    def __init__(self, message: str, line: Optional[int] = None) -> None:
        super().__init__(message)
        self.line = line


def read_config(path: str) -> Tuple[Dict[str, object], Dict[str, int]]:
    """Parse *path*; raise OSError if unreadable, TomlError if not TOML."""
    with open(path, "rb") as handle:
        data = handle.read()
    text = data.decode("utf-8", "replace")
    try:
        table = _toml.loads(text)
    except _toml.TOMLDecodeError as err:
        raise _explained(str(err), text.splitlines()) from None
    return table, _key_lines(text)


def _explained(message: str, lines: List[str]) -> TomlError:
    """The parser's *message*, or for the mistakes people make, a sentence that says what to
    write: a number with a leading zero (``socket_perms = 0666``), a key set twice."""
    at = re.search(r"\(at line (\d+), column \d+\)$", message)
    number = int(at.group(1)) if at else 0
    if not 0 < number <= len(lines):
        return TomlError(message)
    line = lines[number - 1]
    zero = re.fullmatch(r"\s*([A-Za-z0-9_\-]+)\s*=\s*(0[0-9]+)\s*(#.*)?", line)
    if zero:
        name, value = zero.group(1), zero.group(2)
        if KEYS.get(name) is not None and KEYS[name].check is _perms:
            advice = f'write {name} = "{value}" (a mode is a string, in quotes)'
        else:
            advice = f"write {name} = {int(value)}"
        return TomlError(f"{name} = {value}: a TOML number cannot start with 0; {advice}",
                         number)
    if message.startswith("Cannot overwrite a value"):
        key = _KEY_LINE.match(line)
        name = key.group(1).strip("\"'") if key else ""
        first = _first_setting(lines, number, name) if key else None
        if first is not None:
            return TomlError(f"{name} is set twice, on lines {first} and {number}; keep one",
                             number)
    return TomlError(message)


def _first_setting(lines: List[str], number: int, key: str) -> Optional[int]:
    """The earlier line of the same table that sets *key*, or None."""
    for earlier in range(number - 1, 0, -1):
        text = lines[earlier - 1]
        if _TABLE_LINE.match(text):
            return None
        found = _KEY_LINE.match(text)
        if found and found.group(1).strip("\"'") == key:
            return earlier
    return None


def nearest_key(name: str) -> str:
    name = name.lower()                            # LOG_LEVEL is log_level, not max_size
    return max(KEYS, key=lambda known: difflib.SequenceMatcher(None, name, known).ratio())


def _unknown(name: str, value: object) -> str:
    """Why the config's top-level *name* is not a setting, and what was probably meant."""
    if isinstance(value, dict):                    # [logging] or logging.x = ...
        ours = [key for key in value if key in KEYS]
        move = f": move {', '.join(ours)} above the first [table] line" if ours else ""
        return f"[{name}] is a table, but virlogd's keys are all top-level{move}"
    if name.lower() in KEYS:
        return f"unknown key '{name}' (keys are lower-case: did you mean '{name.lower()}'?)"
    return f"unknown key '{name}' (did you mean '{nearest_key(name)}'?)"


# -- merging ----------------------------------------------------------------------------
def load(*, config_file: Optional[str] = None, explicit: bool = False,
         read_config_file: bool = True, env: Optional[Mapping[str, str]] = None,
         flags: Optional[Mapping[str, object]] = None, verbose: bool = False,
         cwd: Optional[str] = None, uid: Optional[int] = None) -> Settings:
    """Everything the daemon (or the library, with ``read_config_file=False``) would use.

    *flags* maps key names to the values given on the command line (already typed by the
    argument parser, so only present keys count); *explicit* says the file was named with
    ``--config`` (then a missing file is an error, not "no config").
    """
    env = os.environ if env is None else env
    flags = flags or {}
    cwd = cwd or os.getcwd()
    settings = Settings(socket_path=defaults.socket_path(env, uid),
                        admin_socket_path=defaults.admin_socket_path(env, uid))
    raw_strings: Dict[str, str] = {}              # filters/outputs text, parsed once at the end

    # 1. the config file
    if read_config_file:
        path = config_file or defaults.config_path(env, uid)
        _apply_file(settings, path, explicit, raw_strings)
        if settings.fatal:
            return settings

    # 2. the environment: an empty variable is the same as an unset one
    debug = env.get("LIBVIRT_DEBUG", "")
    if debug:
        try:
            settings._set("log_level", parse_priority(debug.strip()), "LIBVIRT_DEBUG")
        except ValueError as err:
            settings.problems.append(f"LIBVIRT_DEBUG: {err}; ignored")
    for name in ("log_filters", "log_outputs"):
        variable = KEYS[name].env or ""
        text = env.get(variable, "")
        if text:
            settings._set(name, text, variable)
            raw_strings[name] = text

    # 3. the flags
    for name, value in flags.items():
        if value is None:
            continue
        if name in PATH_KEYS and isinstance(value, str):
            value = os.path.join(cwd, value)
        settings._set(name, value, KEYS[name].flag or name)
        if name in ("log_filters", "log_outputs") and isinstance(value, str):
            raw_strings[name] = value

    _finish(settings, raw_strings, verbose, cwd)
    return settings


def _apply_file(settings: Settings, path: str, explicit: bool,
                raw_strings: Dict[str, str]) -> None:
    try:
        table, lines = read_config(path)
    except FileNotFoundError:
        if explicit:
            settings.fatal = f"cannot read config file {path}: No such file or directory"
        return
    except OSError as err:
        settings.fatal = f"cannot read config file {path}: {err.strerror or err}"
        return
    except TomlError as err:
        where = path if err.line is None else f"{path}:{err.line}"
        settings.fatal = f"{where}: not valid TOML: {err}"
        return
    settings.config_file = path
    base = os.path.dirname(os.path.abspath(path))
    for name, value in table.items():
        where = f"{path}:{lines[name]}" if name in lines else path
        key = KEYS.get(name)
        if key is None:
            settings.problems.append(f"{where}: {_unknown(name, value)}; ignored")
            continue
        try:
            checked = key.check(value)
        except ValueError as err:
            settings.problems.append(f"{where}: {name} {err}; ignored")
            continue
        if name == "log_level" and checked == 0:
            continue                              # 0 means "unset", as in libvirtd.conf
        if name in PATH_KEYS and isinstance(checked, str):
            checked = os.path.join(base, checked)
        settings._set(name, checked, where)
        if name in ("log_filters", "log_outputs") and isinstance(checked, str):
            raw_strings[name] = checked


def _finish(settings: Settings, raw_strings: Dict[str, str], verbose: bool,
            cwd: str) -> None:
    """Parse the filter and output strings that won, and settle the effective level."""
    sources = settings.sources
    filters_text = raw_strings.get("log_filters", "")
    settings.filters, error = parse_filters(filters_text)
    if error is not None:
        settings.problems.append(_partly_ignored(sources, "log_filters", filters_text, error))
    settings.log_filters = format_filters(settings.filters)

    outputs_text = raw_strings.get("log_outputs", "")
    where = sources["log_outputs"]
    # a relative file path in the config is relative to the config's directory
    base = os.path.dirname(where.rsplit(":", 1)[0]) if where.startswith("/") else cwd
    settings.outputs, error = parse_outputs(outputs_text, base)
    if error is not None:
        settings.problems.append(_partly_ignored(sources, "log_outputs", outputs_text, error))
    settings.log_outputs = format_outputs(settings.outputs)

    level = settings.log_level or DEFAULT_LEVEL
    if verbose and level > 2:                     # libvirt's -v: a level above info -> info
        level = 2
        sources["log_level"] = "-v"
    settings.log_level = level
    # a value may hold control characters (TOML's "\n", the environment): each problem is
    # printed as one line, so they are shown escaped (\x0a), as in a log line
    settings.problems[:] = [_CONTROL.sub(_escape, problem) for problem in settings.problems]


def _partly_ignored(sources: Dict[str, str], name: str, text: str, error: SpecError) -> str:
    return (f"{sources[name]}: {error.message} in {name} \"{text}\"; "
            f"the entries before it apply, the rest is ignored")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _escape(found: "re.Match[str]") -> str:
    return f"\\x{ord(found.group()):02x}"


# -- --check-config ---------------------------------------------------------------------
def _toml_value(value: object) -> str:
    if isinstance(value, str):
        # a TOML basic string: JSON's escapes are TOML's (\n, \", \\, \u0007), DEL too
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return str(value)


def render(settings: Settings, default_output: Optional[OutputSpec] = None) -> str:
    """Every effective setting as ``key = value  # from SOURCE``: valid TOML that can be
    pasted into a config. Unset optional keys are listed as comments."""
    out = []
    for name, value in settings.values.items():
        source = settings.sources[name]
        if name == "socket_perms":
            value = f"{settings.socket_perms:04o}"
        if name == "log_outputs" and not value and default_output is not None:
            out.append(f'{name} = {_toml_value(str(default_output))}  '
                       f'# from default (no outputs configured)')
            continue
        if value is None:
            out.append(f"# {name} is unset (default)")
            continue
        out.append(f"{name} = {_toml_value(value)}  # from {source}")
    return "\n".join(out) + "\n"
