"""Small Python programs written to files for the tests, so CODE_FILE/CODE_LINE are real."""
import textwrap


def write_program(tmp_path, body: str, **values) -> str:
    """A program file: ``import sys, os, virlogd``, then *values* as constants, then *body*."""
    header = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    path = tmp_path / "prog.py"
    path.write_text("import sys, os, virlogd\n" + header + textwrap.dedent(body))
    return str(path)


def line_of(path: str, marker: str) -> int:
    """The line number of the line holding *marker* in the program."""
    with open(path) as f:
        return next(n for n, text in enumerate(f, 1) if marker in text)
