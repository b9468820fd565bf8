"""docs/ARCHITECTURE.md names every module of the package, and only modules that exist.

The module map is the first page a newcomer reads; a module it leaves out is one nobody
finds, and a path it names that is gone sends them looking for code that no longer exists.
Every ``virlogd/**/*.py`` file, every C source or header under ``virlogd/`` and the compiled
module's interface (``.pyi``) must be named there by its path from the repository's root
(``virlogd/core/router.py``), and every such path the page names must be a file of the tree.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Set

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
# a path from the root: not the tail of a longer path (/etc/virlogd/..., $XDG.../virlogd/...)
NAMED = re.compile(r"(?<![\w./$-])(virlogd/(?:[\w]+/)*[\w]+\.(?:pyi|py|c|h))\b")


def modules_in_tree() -> Set[str]:
    package = ROOT / "virlogd"
    found = set()
    for pattern in ("*.py", "*.pyi", "*.c", "*.h"):
        for path in package.rglob(pattern):
            if "__pycache__" in path.parts:
                continue
            found.add(path.relative_to(ROOT).as_posix())
    return found


def named_in_doc(text: str) -> Set[str]:
    return set(NAMED.findall(text))


def test_the_pattern_reads_paths_as_the_page_writes_them():
    """Paths in backticks, in lists and in prose are found; the tails of other paths are
    not (a config file's directory is not a module)."""
    text = ("| `virlogd/core/router.py` | the router |\n"
            "`virlogd/_speedups.c` (and `virlogd/__init__.py`), see virlogd/cli/runner.py.\n"
            "Its interface: `virlogd/_speedups.pyi`.\n"
            "`/etc/virlogd/virlogd.conf`, `$XDG_CONFIG_HOME/virlogd/x.py`, a/virlogd/y.py")
    assert named_in_doc(text) == {"virlogd/core/router.py", "virlogd/_speedups.c",
                                  "virlogd/__init__.py", "virlogd/cli/runner.py",
                                  "virlogd/_speedups.pyi"}


def test_every_module_of_the_package_is_in_the_module_map():
    """A module added (or moved) without a line in ARCHITECTURE.md fails here."""
    missing = sorted(modules_in_tree() - named_in_doc(DOC.read_text(encoding="utf-8")))
    assert not missing, ("docs/ARCHITECTURE.md does not name these modules (add each, by its "
                         "path from the repository's root, with its job): "
                         + ", ".join(missing))


def test_every_module_the_map_names_exists():
    """A module removed or renamed while ARCHITECTURE.md still names it fails here."""
    gone = sorted(path for path in named_in_doc(DOC.read_text(encoding="utf-8"))
                  if not (ROOT / path).is_file())
    assert not gone, ("docs/ARCHITECTURE.md names files that do not exist: "
                      + ", ".join(gone))


def test_the_map_points_at_nothing_outside_the_repository():
    """The page is read from a clone: a pointer to a document that is not in it (the design
    notes, an issue's section) is one the reader cannot follow."""
    text = DOC.read_text(encoding="utf-8")
    outside = re.findall(r"DESIGN\s*§|\bissue\s+\d+|\.\./shared", text)
    assert not outside, f"docs/ARCHITECTURE.md points outside the repository: {outside}"
