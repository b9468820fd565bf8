"""The syslog output's RFC 3164 timestamp, cached per second: always what an uncached
``localtime`` gives, across seconds, back and forth, and across a DST change."""
import contextlib
import os
import time

from hypothesis import given, settings, strategies as st

from virlogd.outputs import syslog


def uncached(when):
    tm = time.localtime(when)
    return time.strftime(f"{syslog._MONTHS[tm.tm_mon - 1]} %e %H:%M:%S", tm)


@contextlib.contextmanager
def in_paris():
    """Paris's rules for the block (a POSIX TZ string: no tzdata needed), the cache emptied
    before and after."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "CET-1CEST,M3.5.0,M10.5.0/3"
    time.tzset()
    syslog._last_second = (None, "")
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()
        syslog._last_second = (None, "")


def test_the_dst_change_is_seen_on_the_second_it_happens():
    switch = 1774746000.0                  # 2026-03-29 01:00:00 UTC: CET -> CEST
    with in_paris():
        got = [syslog.rfc3164_timestamp(t)
               for t in (switch - 0.5, switch - 0.001, switch, switch + 0.999, switch - 0.25)]
    assert got == [
        "Mar 29 01:59:59", "Mar 29 01:59:59", "Mar 29 03:00:00", "Mar 29 03:00:00",
        "Mar 29 01:59:59"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 4e9), st.integers(1774745990, 1774746010)
                          .flatmap(lambda s: st.sampled_from([s, s + 0.5, s + 0.999999]))),
                min_size=1, max_size=20))
def test_every_timestamp_is_what_localtime_gives(times):
    with in_paris():
        got = [syslog.rfc3164_timestamp(when) for when in times]
        assert got == [uncached(when) for when in times]
