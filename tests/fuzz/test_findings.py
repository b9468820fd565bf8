"""What the fuzz targets found, each as a plain unit test (docs/RELIABILITY.md, "Fuzzing").

The wire findings (a line of 2**31, a 64 kB function name, a newline in the function name)
are inputs of the corpus, replayed by ``test_fuzz_targets.py::test_corpus_replays_cleanly``;
the ones below were found in the config target.
"""
from __future__ import annotations

import tomllib

from virlogd.core import settings


def _load(tmp_path, text: str):
    path = tmp_path / "virlogd.conf"
    path.write_text(text)
    return settings.load(config_file=str(path), explicit=True, env={}, flags={},
                         cwd=str(tmp_path)), str(path)


def test_a_problem_with_a_control_character_in_the_value_stays_one_line(tmp_path):
    # TOML's "\n" puts a newline in the value; the warning that quotes it must stay one line
    # (it is printed as "virlogd: warning: ..." and by -t, one problem a line)
    s, path = _load(tmp_path, 'log_filters = "1:a\\nb 9:x\\ny\\u001b[2J"\n')
    assert s.problems == [
        f'{path}:1: Invalid priority \'9\' for filter \'9:x\\x0ay\\x1b[2J\' in log_filters '
        f'"1:a\\x0ab 9:x\\x0ay\\x1b[2J"; the entries before it apply, the rest is ignored']


def test_check_config_shows_control_characters_as_toml_escapes(tmp_path):
    # --check-config promises TOML that can be pasted into a config: a value holding a
    # control character must come out escaped, and read back as the same value
    s, _ = _load(tmp_path, 'log_filters = "1:a\\u0007b 2:c\\td"\nlog_outputs = "1:stderr"\n')
    rendered = settings.render(s)
    assert 'log_filters = "1:a\\u0007b 2:c\\td"  # from ' in rendered
    assert tomllib.loads(rendered)["log_filters"] == "1:a\x07b 2:c\td"
