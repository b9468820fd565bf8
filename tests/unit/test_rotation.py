"""Built-in rotation of file outputs: virtlogd's sizes, cuts and backup names."""
from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from virlogd.outputs.base import OutputContext
from virlogd.outputs.file import FileOutput
from virlogd.core.rotation import cut_point, rollover
from virlogd.core.specs import OutputSpec


def make_output(path, max_size, max_backups=3) -> FileOutput:
    return FileOutput(OutputSpec(1, "file", str(path)),
                      OutputContext(max_size=max_size, max_backups=max_backups))


def write(out: FileOutput, *chunks: str) -> None:
    for chunk in chunks:
        out.handle(None, chunk)
    out.flush()


def read(path) -> str:
    with open(path) as f:
        return f.read()


def files(directory) -> dict:
    return {name: read(os.path.join(directory, name)) for name in sorted(os.listdir(directory))}


# -- the pure rule ---------------------------------------------------------------------------
def test_data_that_stays_below_the_limit_is_not_cut():
    """A write that leaves the file below max_size needs no rollover."""
    assert cut_point(b"x" * 9 + b"\n", 0, 10, 89, 100, 89) is None


def test_data_reaching_the_limit_exactly_rolls_over_after_it():
    """A file that becomes exactly max_size is rolled over at once, as in virtlogd."""
    assert cut_point(b"x" * 9 + b"\n", 0, 10, 90, 100, 90) == 10


def test_a_newline_in_the_last_80_bytes_of_what_fits_is_where_the_cut_goes():
    """The cut goes just after the last newline in the last 80 bytes before the limit."""
    data = b"a" * 50 + b"\n" + b"b" * 99 + b"\n"
    assert cut_point(data, 0, len(data), 0, 100, 0) == 51


def test_with_no_newline_in_the_last_80_bytes_the_cut_is_exactly_at_the_limit():
    """A newline earlier than the last 80 bytes does not count: cut at max_size."""
    data = b"a" * 10 + b"\n" + b"b" * 200 + b"\n"
    assert cut_point(data, 0, len(data), 0, 100, 0) == 100


def test_a_file_ending_with_a_newline_near_the_limit_rolls_over_before_the_next_line():
    """A newline already written in the last 80 bytes counts: the next line starts a file."""
    assert cut_point(b"y" * 29 + b"\n", 0, 30, 90, 100, 90) == 0


def test_a_file_already_over_the_limit_rolls_over_first():
    """A file found larger than max_size (max_size lowered) is rolled over before writing."""
    assert cut_point(b"z\n", 0, 2, 150, 100, 150) == 0


def test_rollover_keeps_max_backups_files_with_dot_zero_the_newest(tmp_path):
    """base -> base.0, base.0 -> base.1, ...; the oldest (base.<max_backups-1>) is replaced."""
    base = tmp_path / "a.log"
    for generation in range(4):
        base.write_text(f"gen{generation}\n")
        rollover(str(base), 2)
    assert files(tmp_path) == {"a.log.0": "gen3\n", "a.log.1": "gen2\n"}


# -- the file output -------------------------------------------------------------------------
def test_whole_lines_fill_each_file_and_backups_shift_with_dot_zero_newest(tmp_path):
    """30-byte lines, max_size 100: three lines a file; only max_backups backups remain."""
    out = make_output(tmp_path / "a.log", 100, max_backups=2)
    lines = [f"line {i:02d} ".ljust(29, "x") + "\n" for i in range(1, 11)]
    for line in lines:
        write(out, line)
    out.close()
    assert files(tmp_path) == {
        "a.log": lines[9],
        "a.log.0": "".join(lines[6:9]),
        "a.log.1": "".join(lines[3:6]),
    }


def test_a_line_longer_than_max_size_is_cut_at_exactly_max_size(tmp_path):
    """No newline to cut at: each file is exactly max_size bytes."""
    out = make_output(tmp_path / "a.log", 100)
    write(out, "a" * 249 + "\n")
    out.close()
    assert files(tmp_path) == {"a.log": "a" * 49 + "\n", "a.log.0": "a" * 100,
                               "a.log.1": "a" * 100}


def test_a_batch_is_cut_after_a_newline_in_the_last_80_bytes(tmp_path):
    """A batch crossing the limit is cut after its newline at byte 51, not split at 100."""
    out = make_output(tmp_path / "a.log", 100)
    write(out, "a" * 50 + "\n", "b" * 60 + "\n")
    out.close()
    assert files(tmp_path) == {"a.log": "b" * 60 + "\n", "a.log.0": "a" * 50 + "\n"}


def test_with_max_backups_0_a_full_file_starts_again_and_no_backup_is_kept(tmp_path):
    """max_backups = 0: the full file is removed (virtlogd's meaning), nothing else appears."""
    out = make_output(tmp_path / "a.log", 100, max_backups=0)
    for i in range(5):
        write(out, f"{i}".ljust(39, "-") + "\n")
    out.close()
    assert files(tmp_path) == {"a.log": "4".ljust(39, "-") + "\n"}


def test_an_existing_file_is_continued_with_its_size_counted(tmp_path):
    """Reopening a 90-byte file: the next 30-byte line does not fit, so it rolls over."""
    path = tmp_path / "a.log"
    path.write_text("o" * 89 + "\n")
    out = make_output(path, 100)
    write(out, "n" * 29 + "\n")
    out.close()
    assert files(tmp_path) == {"a.log": "n" * 29 + "\n", "a.log.0": "o" * 89 + "\n"}


def test_max_size_0_turns_rotation_off(tmp_path):
    """max_size = 0: the file only grows."""
    out = make_output(tmp_path / "a.log", 0)
    for _ in range(100):
        write(out, "x" * 99 + "\n")
    out.close()
    assert files(tmp_path) == {"a.log": ("x" * 99 + "\n") * 100}


def test_a_failed_rotation_keeps_every_record_and_says_why(tmp_path):
    """If the backup cannot be made, records are still written and the error names the file."""
    path = tmp_path / "a.log"
    out = make_output(path, 100, max_backups=1)
    os.mkdir(str(path) + ".0")                     # rename(a.log, a.log.0) now fails
    (tmp_path / "a.log.0" / "keep").write_text("")
    try:
        write(out, "x" * 59 + "\n")
        out.handle(None, "y" * 59 + "\n")
        try:
            out.flush()
        except OSError as err:
            assert str(err).startswith(f"[Errno 21] cannot rotate {path}: ")
            assert "writing on past max_size (100 bytes)" in str(err)
        else:
            raise AssertionError("a failed rotation was not reported")
        out.close()
        assert read(path) == "x" * 59 + "\n" + "y" * 59 + "\n"
    finally:
        os.unlink(tmp_path / "a.log.0" / "keep")


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.text(alphabet="ab\n", min_size=0, max_size=150).map(lambda s: s + "\n"),
                      min_size=1, max_size=40),
       max_size=st.integers(1, 200), batch=st.integers(1, 7))
def test_files_never_exceed_max_size_and_batching_does_not_change_the_cuts(
        tmp_path_factory, lines, max_size, batch):
    """Whatever the batching: no file above max_size, the kept files are the stream's tail,
    and the files are byte for byte those of one record per write."""
    results = []
    for size in (1, batch):
        directory = tmp_path_factory.mktemp("rot")
        out = make_output(directory / "a.log", max_size, max_backups=1000)
        for i in range(0, len(lines), size):
            write(out, *lines[i:i + size])
        out.close()
        results.append(files(directory))
    assert results[0] == results[1]
    found = results[0]
    assert all(len(text.encode()) <= max_size for text in found.values())
    backups = sorted((int(name.rsplit(".", 1)[1]) for name in found if name != "a.log"),
                     reverse=True)
    assert backups == list(range(len(backups) - 1, -1, -1))
    stream = "".join(found[f"a.log.{i}"] for i in backups) + found.get("a.log", "")
    assert stream == "".join(lines)
