"""``virlogd-admin stats --openmetrics`` against a real daemon, read back with a real parser
(prometheus_client's OpenMetrics parser), the numbers equal to ``stats --json``."""
import json
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from daemonproc import ADMIN, Daemon, read_until, wait_for
from virlogd.cli.metrics import render


def parse(text):
    """{(sample name, labels as a sorted tuple): value}, and the families' types."""
    samples, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples
            samples[key] = sample.value
    return samples, types


def test_openmetrics_parses_and_matches_stats(tmp_path):
    """Records received and written, drops by reason, a failing output, clients, a follower,
    the buffer, admin changes: every value the same as in ``stats --json``."""
    log = tmp_path / 'a"quoted"\\dir' / "out.log"      # label escaping
    log.parent.mkdir()
    d = Daemon(tmp_path, outputs=f"3:file:{log}")
    follower = None
    try:
        for i in range(5):
            assert d.virlog("-p", "error", "-s", "app", f"record {i}").returncode == 0
        d.virlog("-p", "debug", "-s", "app", "kept by nothing")
        assert d.admin("daemon-log-level", "2").returncode == 0
        follower = subprocess.Popen([ADMIN, "-S", d.admin_socket, "follow"], env=d.env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: json.loads(d.admin("stats", "--json").stdout)["followers"]
                 ["connected"] == 1, what="the follower")
        read_until(log, "record 4")
        done = d.admin("stats", "--openmetrics")
        stats = json.loads(d.admin("stats", "--json").stdout)
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout.endswith("\n# EOF\n")
        samples, types = parse(done.stdout)
        output = {"output": f"3:file:{log}"}
        label = tuple(sorted(output.items()))
        assert samples[("virlogd_records_received_total", ())] == stats["received"] == 6
        assert samples[("virlogd_records_own_total", ())] == stats["own"]
        assert samples[("virlogd_output_records_written_total", label)] == \
            stats["outputs"][0]["written"] >= 5
        assert samples[("virlogd_output_records_failed_total", label)] == 0
        assert samples[("virlogd_output_failing", label)] == 0
        assert samples[("virlogd_clients", ())] == stats["clients"]
        assert samples[("virlogd_followers", ())] == 1
        assert samples[("virlogd_buffer_used_bytes", ())] == stats["buffer"]["used"] > 0
        assert samples[("virlogd_buffer_size_bytes", ())] == stats["buffer"]["size"]
        assert samples[("virlogd_admin_changes_total", ())] == stats["admin_changes"] == 1
        assert types["virlogd_records_received"] == "counter"
        assert types["virlogd_clients"] == "gauge"
    finally:
        if follower is not None:
            follower.kill()
            follower.wait()
        assert d.stop() == 0


def test_drops_by_reason_and_a_failing_output_are_labelled():
    """From a stats answer with drops and a failing output (what a real one holds then)."""
    stats = {"received": 10, "own": 2, "dropped": {"client-overflow": 3, "no output took it": 1},
             "outputs": [{"output": "1:remote:tcp://127.0.0.1:514", "written": 4, "failed": 6,
                          "dropped": 2, "last_error": "Connection refused"}],
             "clients": 1, "buffer": {"used": 0, "size": 0, "skipped": 0}}
    samples, _types = parse(render(stats))
    assert samples[("virlogd_records_dropped_total", (("reason", "client-overflow"),))] == 3
    assert samples[("virlogd_records_dropped_total", (("reason", "no output took it"),))] == 1
    remote = (("output", "1:remote:tcp://127.0.0.1:514"),)
    assert samples[("virlogd_output_records_failed_total", remote)] == 6
    assert samples[("virlogd_output_records_dropped_total", remote)] == 2
    assert samples[("virlogd_output_failing", remote)] == 1


def test_the_parser_refuses_what_is_not_openmetrics():
    """The check has teeth: the same text without its # EOF, or a counter sample without
    _total, does not parse."""
    text = render({"received": 1})
    with pytest.raises(ValueError):
        list(text_string_to_metric_families(text.replace("# EOF\n", "")))
    with pytest.raises(ValueError):
        list(text_string_to_metric_families(
            text.replace("virlogd_records_received_total 1", "virlogd_records_received 1")))
