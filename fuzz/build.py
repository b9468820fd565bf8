"""Builds the compiled speedups for fuzzing: clang, AddressSanitizer, UndefinedBehaviorSanitizer and
libFuzzer's coverage (``-fsanitize=fuzzer-no-link``), into build/fuzz/lib/virlogd/.

Never in place: the ``virlogd/_speedups*.so`` next to the source is the one the test suite
and the daemon load, and stays built by gcc without sanitizers. Rebuilt when a ``virlogd/*.c``
or ``*.h`` is newer than the sanitized module. Exits non-zero, naming what is missing, when
clang or a module could not be built (setup.py's extensions are optional: it would not say).
"""
import glob
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "build", "fuzz")
LIB = os.path.join(OUT, "lib", "virlogd")
SANITIZE = "-fsanitize=address,undefined,fuzzer-no-link"
CFLAGS = f"-g -O1 -fno-omit-frame-pointer {SANITIZE} -fno-sanitize-recover=all"


def stale() -> list:
    sources = sorted(glob.glob(os.path.join(ROOT, "virlogd", "*.c")))
    newest_header = max((os.path.getmtime(h) for h in
                         glob.glob(os.path.join(ROOT, "virlogd", "*.h"))), default=0)
    todo = []
    for src in sources:
        name = os.path.basename(src)[:-2]
        built = glob.glob(os.path.join(LIB, name + ".cpython-*.so"))
        if not built or os.path.getmtime(built[0]) < max(os.path.getmtime(src), newest_header):
            todo.append(name)
    return todo


def main() -> int:
    todo = stale()
    if not todo:
        return 0
    clang = shutil.which("clang")
    if clang is None:
        sys.stderr.write("fuzz/build.py: clang is not installed (apt-get install clang)\n")
        return 1
    env = dict(os.environ, CC=clang, LDSHARED=f"{clang} -shared", CFLAGS=CFLAGS,
               LDFLAGS=SANITIZE, PYTHONWARNINGS="ignore")
    for name in todo:      # force setup.py to rebuild what is stale
        for old in glob.glob(os.path.join(LIB, name + ".cpython-*.so")):
            os.unlink(old)
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--force",
                             "--build-lib", os.path.join(OUT, "lib"),
                             "--build-temp", os.path.join(OUT, "tmp")],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    missing = stale()
    if result.returncode or missing:
        sys.stderr.write(result.stdout + result.stderr)
        sys.stderr.write(f"fuzz/build.py: not built with sanitizers: {', '.join(missing)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
