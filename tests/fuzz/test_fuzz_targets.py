"""The fuzz targets, in their bounded form: each runs a few seconds under libFuzzer.

Each target (wire frames, syslog datagrams, admin requests, config files, filter and output
strings; see ``fuzz/``) replays its whole committed corpus, then mutates for a few seconds,
against the compiled speedups built with AddressSanitizer and UndefinedBehaviorSanitizer, and in pure
Python. Any finding fails the test: an exception out of the boundary, a forged line, a
sanitizer report, a crash, an input slower than the hang limit. The figures of the long runs
(``make fuzz``) are in docs/RELIABILITY.md, "Fuzzing".

atheris and clang are test dependencies (pyproject's ``test`` extra, scripts/setup.sh): on a
developer's machine without them these tests skip; in CI (``CI`` set) they fail.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_real

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "fuzz" / "run.py"
TARGETS = ("wire", "syslog", "admin", "config", "specs")
# seconds of mutation after the corpus is replayed: the sanitized run is ~10x slower
SECONDS = {"c": 7, "pure": 3}


@pytest.fixture(scope="module")
def sanitized_build():
    try:
        import atheris  # noqa: F401
    except ImportError:
        require_real("atheris is not installed (pip install atheris)")
    if shutil.which("clang") is None:
        require_real("clang is not installed (apt-get install clang)")
    built = subprocess.run([sys.executable, str(ROOT / "fuzz" / "build.py")],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr


@pytest.mark.parametrize("mode", ["c", "pure"])
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_finds_nothing(sanitized_build, tmp_path, target, mode):
    proc = subprocess.run(
        [sys.executable, str(RUN), f"--{mode}", "--seconds", str(SECONDS[mode]),
         "--timeout", "30", "--out", str(tmp_path), target],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "VIRLOGD_PURE_PYTHON"})
    summaries = [json.loads(line) for line in proc.stdout.splitlines()
                 if line.startswith("{")]
    detail = proc.stdout[-8000:] + proc.stderr[-2000:]
    assert proc.returncode == 0 and len(summaries) == 1, detail
    summary = summaries[0]
    assert summary["status"] == 0 and summary["findings"] == [], detail
    # the whole corpus ran, and the mutations reached past it
    corpus = len(os.listdir(ROOT / "fuzz" / "corpus" / target))
    assert summary["execs"] > corpus and summary["cov"] > 100, detail


@pytest.mark.parametrize("mode", ["c", "pure"])
@pytest.mark.parametrize("target", TARGETS)
def test_corpus_replays_cleanly(tmp_path, target, mode):
    """Every committed input, findings included (``fuzz/corpus/wire/seed-line-2-31``,
    ``seed-func-newline``, ``fuzz/regressions/wire/func-64k``: frames that once crashed a
    twin), once
    through the target in its own process, against the twins as built in place (no atheris
    needed)."""
    env = {k: v for k, v in os.environ.items() if k != "VIRLOGD_PURE_PYTHON"}
    env["FUZZ_SCRATCH"] = str(tmp_path)
    if mode == "pure":
        env["VIRLOGD_PURE_PYTHON"] = "1"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "harness.py"), target, "--replay",
         str(ROOT / "fuzz" / "corpus" / target)]
        + [str(path) for path in (ROOT / "fuzz" / "regressions").glob(f"{target}/*")],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    assert "0 finding(s)" in proc.stdout
