"""Runs the fuzz targets: ``python fuzz/run.py [--seconds N] [--pure|--c] [TARGET...]``.

``make fuzz`` runs every target for ``FUZZ_SECONDS`` (300) in pure Python, then as long
against the compiled speedups built with ASan and UBSan; ``tests/fuzz/test_fuzz_targets.py`` runs each
for a few seconds in CI. One libFuzzer process at a time (``-workers=1``): the machine is
shared.

For each run: the sanitized speedups are (re)built (``fuzz/build.py``); the harness is started
with atheris's ASan runtime preloaded (it carries libFuzzer and UBSan's handlers); the large
inputs of ``fuzz/regressions/TARGET`` run once; then libFuzzer mutates, seeded from
``fuzz/corpus/TARGET`` (never written: what the run finds goes to ``build/fuzz/corpus/TARGET``;
``--merge`` adds the inputs that reach new coverage to the repository's corpus). Findings
(crashes, sanitizer reports, uncaught exceptions, hangs over ``--timeout`` seconds, memory
over 4 GB) are saved in ``build/fuzz/findings/``; the exit status is 1 if any run found
something. The last line of each run is a JSON summary: executions, libFuzzer's ``cov``
(edges: C and Python) and ``ft`` (features), the corpus size, and the findings.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "build", "fuzz")
# target -> libFuzzer's -max_len: the largest input worth mutating. Larger inputs cost far
# more per run than they add; those that matter (the 64 kB limits of ring entries, datagrams,
# admin lines) are in fuzz/regressions/TARGET, replayed before each run.
TARGETS = {"wire": 16384, "syslog": 8192, "admin": 8192, "config": 8192, "specs": 4096}
_STATUS = re.compile(r"^#(\d+)\s+\S+\s+cov: (\d+) ft: (\d+)(?: corp: (\d+)/)?", re.M)
_EXECS = re.compile(r"stat::number_of_executed_units: (\d+)")


def sanitizer_runtime() -> str:
    import atheris
    path = os.path.join(atheris.path(), "asan_with_fuzzer.so")
    if not os.path.exists(path):
        raise SystemExit(f"fuzz: atheris has no {path} (reinstall atheris with clang present)")
    return path


def run_one(target: str, *, pure: bool, seconds: int, timeout: int, merge: bool,
            quiet: bool, out: str = OUT) -> dict:
    mode = "pure" if pure else "c"
    seeds = os.path.join(HERE, "corpus", target)
    found = os.path.join(out, "corpus", target)
    findings = os.path.join(out, "findings")
    for path in (found, findings):
        os.makedirs(path, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f"virlogd-fuzz-{target}-")
    env = dict(os.environ, FUZZ_SCRATCH=scratch, PYTHONHASHSEED="0",
               # no leak check (CPython keeps much for good), bounded quarantine (memory)
               ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:"
                            "quarantine_size_mb=64:malloc_context_size=8",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    env.pop("VIRLOGD_PURE_PYTHON", None)
    if pure:
        env["VIRLOGD_PURE_PYTHON"] = "1"
    else:
        env["LD_PRELOAD"] = sanitizer_runtime()
        env["PYTHONMALLOC"] = "malloc"     # ASan sees each Python object's own allocation
    before = set(os.listdir(findings))
    regressions = os.path.join(HERE, "regressions", target)
    if os.path.isdir(regressions):       # each once, under the same sanitizers: no fuzzing
        replayed = subprocess.run(
            [sys.executable, os.path.join(HERE, "harness.py"), target, f"-timeout={timeout}",
             "-rss_limit_mb=4096", f"-artifact_prefix={findings}/{target}-{mode}-"]
            + sorted(os.path.join(regressions, name) for name in os.listdir(regressions)),
            cwd=ROOT, env=env, capture_output=True, text=True, errors="replace",
            timeout=60 * timeout)
        if replayed.returncode:
            shutil.rmtree(scratch, ignore_errors=True)
            sys.stdout.write((replayed.stdout + replayed.stderr)[-12000:])
            summary = {"target": target, "mode": mode, "seconds": 0, "execs": 0, "cov": 0,
                       "ft": 0, "corpus": 0, "status": replayed.returncode,
                       "findings": [f"{regressions} (replayed)"]}
            print(json.dumps(summary), flush=True)
            return summary
    cmd = [sys.executable, os.path.join(HERE, "harness.py"), target,
           f"-max_total_time={seconds}", f"-timeout={timeout}", "-rss_limit_mb=4096",
           f"-max_len={TARGETS[target]}", "-print_final_stats=1",
           f"-artifact_prefix={findings}/{target}-{mode}-"]
    dictionary = os.path.join(HERE, "dict", f"{target}.dict")
    if os.path.exists(dictionary):      # the grammar's words, for what JSON or specs need
        cmd.append(f"-dict={dictionary}")
    cmd += [found, seeds]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              errors="replace", timeout=seconds + 10 * timeout + 120)
        output, status = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        output = ((err.stdout or b"").decode(errors="replace") +
                  (err.stderr or b"").decode(errors="replace"))
        status = "timeout"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    statuses = _STATUS.findall(output)
    execs = _EXECS.search(output)
    new = sorted(set(os.listdir(findings)) - before)
    summary = {
        "target": target, "mode": mode, "seconds": round(time.monotonic() - started, 1),
        "status": status,
        "execs": int(execs.group(1)) if execs else (int(statuses[-1][0]) if statuses else 0),
        "cov": int(statuses[-1][1]) if statuses else 0,
        "ft": int(statuses[-1][2]) if statuses else 0,
        "corpus": int(statuses[-1][3] or 0) if statuses else 0,
        "findings": [os.path.join(findings, name) for name in new],
    }
    if status != 0 or new:
        sys.stdout.write(output[-12000:])
    elif not quiet:
        sys.stdout.write("".join(line + "\n" for line in output.splitlines()
                                 if line.startswith(("fuzz:", "INFO: seed", "#"))
                                 and "pulse" not in line)[-3000:])
    if merge and status == 0 and not pure:
        subprocess.run([sys.executable, os.path.join(HERE, "harness.py"), target,
                        "-merge=1", f"-max_len={TARGETS[target]}", seeds, found],
                       cwd=ROOT, env=env, capture_output=True)
    print(json.dumps(summary), flush=True)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=f"targets to run (default: all): {', '.join(TARGETS)}")
    parser.add_argument("--seconds", type=int,
                        default=int(os.environ.get("FUZZ_SECONDS", "300")))
    parser.add_argument("--timeout", type=int, default=25,
                        help="seconds one input may take before it counts as a hang")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--pure", action="store_true", help="pure Python only")
    mode.add_argument("--c", action="store_true", help="the sanitized compiled speedups only")
    parser.add_argument("--merge", action="store_true",
                        help="add inputs reaching new coverage to fuzz/corpus/TARGET")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--out", default=OUT,
                        help="where new inputs and findings go (default build/fuzz)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.targets if name not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)} (expected {', '.join(TARGETS)})")
    # pure Python first: it runs ten times faster, and the sanitized run then starts from
    # everything it found (build/fuzz/corpus/TARGET is shared), under ASan and UBSan
    modes = [True] if args.pure else [False] if args.c else [True, False]
    if False in modes:
        sanitizer_runtime()
        built = subprocess.run([sys.executable, os.path.join(HERE, "build.py")])
        if built.returncode:
            return 1
    failed = False
    for target in args.targets or list(TARGETS):
        for pure in modes:
            summary = run_one(target, pure=pure, seconds=args.seconds, timeout=args.timeout,
                              merge=args.merge, quiet=args.quiet, out=args.out)
            failed = failed or summary["status"] != 0 or bool(summary["findings"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
