#!/usr/bin/env python3
"""Write virlogd's man pages from the sources they describe, so that they cannot drift:

* virlogd(8), virlog(1), virlogd-admin(8): each command's options (and virlogd-admin's
  commands) are read from the argparse parser that ``--help`` prints;
* virlogd.conf(5): every key, with its comment, is read from ``etc/virlogd.conf``;
* the ENVIRONMENT sections come from the table of keys in ``virlogd/settings.py``.

Only the few fixed paragraphs below (signals, files, exit statuses) are written here.

    python3 scripts/manpages.py OUTDIR     # OUTDIR/man1/virlog.1, OUTDIR/man5/..., man8/...

``scripts/install.sh`` runs it into ``$DESTDIR/usr/local/share/man``; a test renders each page
with ``man --warnings -l`` and compares it with ``--help`` and the config file. The pages
describe the system daemon, so the defaults shown are those of root with a clean environment
(a help text that names a default path computes it from the uid and the environment).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "etc" / "virlogd.conf"
DATE = "2026"                      # the year of the release the pages document


# -- roff ------------------------------------------------------------------------------------
def esc(text: str) -> str:
    """*text* as roff prints it literally: backslashes, every '-' as the ASCII minus (copied
    commands and options must work), characters beyond ASCII as \\[uXXXX]; a line may break
    after a '/'."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = text.replace("/", "/\\:")       # a place to break a long path (no hyphenation)
    return "".join(ch if ord(ch) < 128 else f"\\[u{ord(ch):04X}]" for ch in text)


def line(text: str) -> str:
    """One input line of text: a leading '.' or "'" would be a request."""
    text = esc(text)
    return "\\&" + text if text.startswith((".", "'")) else text


def bold(text: str) -> str:
    return f"\\fB{esc(text)}\\fR"


def italic(text: str) -> str:
    return f"\\fI{esc(text)}\\fR"


def header(name: str, section: int, title: str) -> List[str]:
    from virlogd import __version__
    return [f'.TH {name.upper()} {section} "{DATE}" "virlogd {__version__}" "{title}"',
            # no hyphenation, ragged right: options and paths stay whole, as typed
            ".nh", ".ad l",
            ".SH NAME", f"{esc(name)} \\- {esc_summary(name)}"]


SUMMARIES = {
    "virlogd": "libvirt's logging facility as a daemon",
    "virlog": "send log records to virlogd from a shell, like logger",
    "virlogd-admin": "change and inspect a running virlogd",
    "virlogd.conf": "configuration file of virlogd",
}


def esc_summary(name: str) -> str:
    return esc(SUMMARIES[name])


def paragraphs(text: str) -> List[str]:
    """Plain prose: one line per sentence group, blank-line separated paragraphs."""
    out = []
    for para in re.split(r"\n\s*\n", text.strip()):
        if out:
            out.append(".PP")
        out.append(line(" ".join(para.split())))
    return out


# -- argparse --------------------------------------------------------------------------------
def _invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    fmt = parser._get_formatter()
    if not action.option_strings:
        return italic(fmt._metavar_formatter(action, action.dest)(1)[0])
    value = ""
    if action.nargs != 0:
        value = " " + italic(fmt._format_args(
            action, fmt._get_default_metavar_for_optional(action)))
    return ", ".join(bold(opt) + value for opt in action.option_strings)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return parser._get_formatter()._expand_help(action) if action.help else ""


def options(parser: argparse.ArgumentParser) -> List[str]:
    """A .TP entry per argument (positionals first), as ``--help`` lists them."""
    out = []
    actions = [a for a in parser._actions if a.help is not argparse.SUPPRESS
               and not isinstance(a, argparse._SubParsersAction)]
    for action in sorted(actions, key=lambda a: bool(a.option_strings)):
        out += [".TP", _invocation(parser, action), line(_help(parser, action))]
    return out


def synopsis(parser: argparse.ArgumentParser) -> List[str]:
    usage = parser.format_usage().strip()
    usage = re.sub(r"^usage: ", "", usage)
    words = " ".join(usage.split())
    prog, _, rest = words.partition(" ")
    return [".SH SYNOPSIS", f"{bold(prog)} {esc(rest)}".rstrip()]


def description(parser: argparse.ArgumentParser) -> List[str]:
    out = [".SH DESCRIPTION"] + paragraphs(parser.description or "")
    if parser.epilog:
        out += [".PP"] + paragraphs(parser.epilog)
    return out


def subcommands(parser: argparse.ArgumentParser) -> List[str]:
    out = [".SH COMMANDS"]
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, sub in action.choices.items():
            usage = " ".join(sub.format_usage().split())
            usage = re.sub(r"^usage: \S+ ", "", usage).replace("[-h] ", "").replace(" [-h]", "")
            cmd, _, rest = usage.partition(" ")
            out += [".TP", f"{bold(cmd)} {esc(rest)}".rstrip()]
            out.append(line(sub.description or helps.get(name) or ""))
            extra = [a for a in sub._actions if a.option_strings and
                     not isinstance(a, argparse._HelpAction)]
            for opt in extra:
                out += [".RS", ".TP", _invocation(sub, opt), line(_help(sub, opt)), ".RE"]
    return out


def environment() -> List[str]:
    from virlogd.core.settings import KEYS
    out = [".SH ENVIRONMENT"]
    for key in KEYS.values():
        if key.env:
            flag = f" and the flag {bold(key.flag)}" if key.flag else ""
            out += [".TP", bold(key.env),
                    f"The value of the key {bold(key.name)}; replaces the config file's, and is "
                    f"replaced by the command line's{flag}. An empty variable is unset."]
    return out


def see_also(*pages: str) -> List[str]:
    return [".SH SEE ALSO", ",\n".join(f"{bold(p.split('(')[0])}({p.split('(')[1]}"
                                       for p in pages)]


# -- the pages -------------------------------------------------------------------------------
def virlogd_8() -> str:
    from virlogd.cli import virlogd as cli
    p = cli.parser()
    out = header("virlogd", 8, "System Administration") + synopsis(p) + description(p)
    out += [".PP"] + paragraphs("""
        Programs send records to virlogd over a local socket (the library virlogd, its
        VirlogdHandler for Python's logging, or virlog(1)). virlogd filters them with
        libvirt's grammar, writes them to libvirt's outputs (stderr, syslog, files, journald,
        a remote collector) and keeps a ring buffer of every recent record, debug included.

        Settings come, value by value, from the config file (virlogd.conf(5)), then the
        environment, then the flags below; a later source replaces a value wholesale.""")
    out += [".SH OPTIONS"] + options(p) + environment()
    out += [".SH SIGNALS", ".TP", bold("SIGUSR2"),
            line("Write the ring buffer to every stderr and file output (or the default log "
                 "file) and go on; the same as virlogd-admin dump. The process is named "
                 "virlogd, so kill -USR2 $(pidof virlogd) reaches it."),
            ".TP", bold("SIGTERM") + ", " + bold("SIGINT"),
            line("Stop cleanly: what was received is routed and flushed first."),
            ".TP", bold("SIGHUP"),
            line("Changes nothing: the daemon notes once that it must be restarted to reload "
                 "its configuration.")]
    out += [".SH EXIT STATUS", ".TP", "0", line("a clean stop, or a clean --check-config"),
            ".TP", "1", line("the start was impossible (a bad config file, a socket in use, "
                             "a second instance), or --check-config found a problem"),
            ".TP", "2", line("a usage error on the command line"),
            ".TP", "70", line("a crash (the ring buffer was dumped first)")]
    out += [".SH FILES", ".TP", bold("/etc/virlogd.conf"),
            line("the config file of root; $XDG_CONFIG_HOME/virlogd/virlogd.conf for other "
                 "users"),
            ".TP", bold("/run/virlogd/virlogd-sock") + ", " + bold("/run/virlogd/virlogd-admin-sock"),
            line("the client and admin sockets of root; under $XDG_RUNTIME_DIR/virlogd for "
                 "other users"),
            ".TP", bold("/var/log/virlogd/virlogd.log"),
            line("the default output of a detached daemon when journald is not reachable")]
    out += see_also("virlogd.conf(5)", "virlog(1)", "virlogd-admin(8)", "logger(1)",
                    "journalctl(1)")
    return "\n".join(out) + "\n"


def virlog_1() -> str:
    from virlogd.cli import virlog as virlog_cli
    p = virlog_cli.parser()
    out = header("virlog", 1, "User Commands") + synopsis(p) + description(p)
    out += [".PP"] + paragraphs("""
        virlog connects to virlogd first and fails at once if it cannot. With MESSAGE it sends
        one record; without, each line of standard input is one record, sent as it arrives.
        It exits 0 once the daemon has taken in and routed every record.""")
    out += [".SH OPTIONS"] + options(p)
    out += [".SH EXIT STATUS", ".TP", "0", line("every record reached the daemon's outputs"),
            ".TP", "1", line("the daemon could not be reached, or refused a record"),
            ".TP", "2", line("a usage error on the command line")]
    out += see_also("virlogd(8)", "virlogd-admin(8)", "logger(1)")
    return "\n".join(out) + "\n"


def virlogd_admin_8() -> str:
    from virlogd.cli import admin as admin_cli
    p = admin_cli.parser()
    out = header("virlogd-admin", 8, "System Administration") + synopsis(p) + description(p)
    out += [".PP"] + paragraphs("""
        Changes apply at once, all or nothing, last until the daemon restarts, and are logged
        with the uid and pid of whoever made them. The admin socket is mode 0600, and the
        daemon also checks that the peer runs as its own uid.""")
    out += [".SH OPTIONS"] + options(p) + subcommands(p)
    out += [".SH EXIT STATUS", ".TP", "0", line("done"),
            ".TP", "1", line("the daemon refused the request or could not be reached"),
            ".TP", "2", line("a usage error on the command line")]
    out += see_also("virlogd(8)", "virlogd.conf(5)", "virlog(1)")
    return "\n".join(out) + "\n"


KEY_LINE = re.compile(r"^#\s?([a-z_]+)\s*=\s*(.*)$")
SECTION_RULE = re.compile(r"^#{10,}$")


def conf_blocks(text: str) -> Tuple[List[str], List[Tuple[str, List[List[str]]]]]:
    """etc/virlogd.conf as (intro lines, [(section title, [block lines])]): blocks are the
    runs of comment lines between blank lines; a section starts at a line of #s followed by
    ``#``, ``# Title``, ``#``. Lines keep their text after the leading ``#``."""
    blocks, current = [], []
    for raw in text.splitlines():
        if raw.strip():
            current.append(raw)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    intro: List[str] = []
    sections: List[Tuple[str, List[List[str]]]] = []
    for block in blocks:
        if SECTION_RULE.match(block[0]):
            titles = [b[1:].strip() for b in block[1:] if b[1:].strip()]
            sections.append((titles[0] if titles else "", []))
            continue
        if not sections:
            intro += block + ["#"]
        else:
            sections[-1][1].append(block)
    return intro, sections


def comment_roff(lines: List[str]) -> List[str]:
    """Comment lines as roff: prose filled, ``#`` alone a paragraph break (``.IP``: it keeps
    a .TP entry's indent), lines indented beyond one space and key lines kept as they are
    (examples; their relative indentation too)."""
    out: List[str] = []
    example: List[str] = []

    def flush():
        if example:
            cut = min(len(e) - len(e.lstrip(" ")) for e in example)
            out.extend([".RS", ".PP", ".nf"] + [line(e[cut:]) for e in example]
                       + [".fi", ".RE", ".IP"])
            example.clear()

    for raw in lines:
        body = raw[1:] if raw.startswith("#") else raw
        if KEY_LINE.match(raw):
            example.append(body.strip())
            continue
        if body.startswith("  ") or not raw.startswith("#"):
            example.append(body.rstrip())
            continue
        flush()
        text = body.strip()
        if not text:
            if out and out[-1] != ".IP":
                out.append(".IP")
            continue
        out.append(line(text))
    flush()
    while out and out[-1] == ".IP":
        out.pop()
    return out


def documented_keys(text: str) -> List[str]:
    """The keys etc/virlogd.conf documents (a test holds them equal to settings.KEYS)."""
    return [m.group(1) for m in map(KEY_LINE.match, text.splitlines()) if m]


def virlogd_conf_5() -> str:
    text = CONF.read_text(encoding="utf-8")
    intro, sections = conf_blocks(text)
    out = header("virlogd.conf", 5, "File Formats")
    out += [".SH SYNOPSIS", bold("/etc/virlogd.conf"),
            ".br", bold("$XDG_CONFIG_HOME/virlogd/virlogd.conf")]
    out += [".SH DESCRIPTION"] + [o if o != ".IP" else ".PP" for o in comment_roff(intro)]
    out += [".SH KEYS"]
    for title, blocks in sections:
        out += [f".SS {esc(title)}"]
        for block in blocks:
            keys = [m.group(1) for m in map(KEY_LINE.match, block) if m]
            if keys:
                out += [".TP", ", ".join(bold(k) for k in keys)]
                out += comment_roff(block)
            else:
                out += [".PP"] + [o if o != ".IP" else ".PP" for o in comment_roff(block)]
    out += environment()
    out += see_also("virlogd(8)", "virlogd-admin(8)", "virlog(1)")
    return "\n".join(out) + "\n"


PAGES = {"man8/virlogd.8": virlogd_8, "man1/virlog.1": virlog_1,
         "man8/virlogd-admin.8": virlogd_admin_8, "man5/virlogd.conf.5": virlogd_conf_5}


def _as_root_with_a_clean_environment() -> None:
    """The defaults the pages show are the system daemon's (see the module docstring)."""
    os.environ.clear()
    os.environ.update({"COLUMNS": "80", "LC_ALL": "C.UTF-8"})
    os.geteuid = lambda: 0          # noqa: E731 - this process only renders text
    os.getuid = lambda: 0           # noqa: E731


def render_all() -> dict:
    _as_root_with_a_clean_environment()
    sys.path.insert(0, str(ROOT))
    return {path: make() for path, make in PAGES.items()}


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write("usage: manpages.py OUTDIR\n")
        return 2
    out = Path(argv[0])
    for path, text in render_all().items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="ascii")
        target.chmod(0o644)
    return 0


if __name__ == "__main__":
    sys.exit(main())
