"""The layers import downwards only: ``virlogd/core`` is what runs in every program and in the
daemon, so it must never pull in the daemon, the client or the commands (a library user would
load the daemon's modules; a change there could break every program that logs)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "virlogd"
ABOVE_CORE = ("daemon", "client", "cli")


def _imported(path: Path):
    """The virlogd modules *path* imports, as dotted names under ``virlogd``, anywhere in it
    (a function-level import counts too)."""
    here = ["virlogd"] + list(path.relative_to(PACKAGE).parent.parts)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            names = [f"{name}.{alias.name}" for alias in node.names] if not node.module \
                else [name]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        yield from (n for n in names if n.startswith("virlogd."))


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").glob("*.py")), ids=lambda p: p.name)
def test_core_imports_nothing_from_the_daemon_the_client_or_the_commands(path):
    wrong = [name for name in _imported(path)
             if name.split(".")[1] in ABOVE_CORE]
    assert wrong == [], f"{path.name} imports {wrong}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "protocol").glob("*.py")),
                         ids=lambda p: p.name)
def test_the_protocol_stands_on_core_alone(path):
    """Both ends speak it: the wire format must not depend on either end's code."""
    wrong = [name for name in _imported(path)
             if name.split(".")[1] not in ("core", "protocol")]
    assert wrong == [], f"{path.name} imports {wrong}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "outputs").glob("*.py")),
                         ids=lambda p: p.name)
def test_outputs_import_nothing_from_the_daemon_or_the_commands(path):
    """The library builds outputs in every program that logs: no daemon code comes along."""
    wrong = [name for name in _imported(path)
             if name.split(".")[1] in ("daemon", "cli")]
    assert wrong == [], f"{path.name} imports {wrong}"


def test_the_import_reader_sees_relative_imports():
    """The check above reads ``from ..daemon.x import y`` as virlogd.daemon.x (it once
    let core/defaults.py import daemon/sockets.py)."""
    probe = PACKAGE / "core" / "defaults.py"
    assert all(name.startswith("virlogd.") for name in _imported(probe))
    assert "virlogd.core.specs" in set(_imported(probe))
