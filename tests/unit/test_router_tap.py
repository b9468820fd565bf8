"""Router.tap (what ``virlogd-admin follow`` hangs on): every routed batch, before the
filters; and nothing at all while it is None."""
import pytest

from virlogd.core.filters import FilterSet
from virlogd.core.record import Record
from virlogd.core.router import Router, RouterState
from virlogd.core.specs import FilterSpec


class Out:
    """A text output that notes what it was handed."""
    text, batched, headers, started, failing, recovering = True, False, False, False, False, \
        False
    failed = written = dropped = 0
    last_error = None

    def __init__(self, priority):
        self.priority = priority
        self.seen = []

    def handle(self, record, line):
        self.seen.append(record.message)

    def flush(self):
        pass


def _router(out):
    return Router(RouterState(FilterSet([FilterSpec(1, "qemu")], 3), [out]))


def test_the_tap_sees_every_batch_whole_before_the_outputs():
    """Debug of a source no filter lets through reaches the tap too, and it comes first."""
    out = Out(1)
    router = _router(out)
    seen = []
    router.tap = lambda records: seen.append(([r.message for r in records], list(out.seen)))
    batch = [Record(1, "other", "hidden debug", time=1.0, pid=1),
             Record(1, "qemu.mon", "shown debug", time=1.0, pid=1)]
    router.route_many(batch)
    router.route(Record(4, "x", "error", time=1.0, pid=1))
    assert seen == [(["hidden debug", "shown debug"], []),
                    (["error"], ["shown debug"])]
    assert out.seen == ["shown debug", "error"]
    assert router.received == 3


def test_no_tap_no_call_and_an_error_of_the_tap_comes_out_unrouted():
    """None: routing as before. A tap must never raise (follow.py's does not); if one does,
    it comes out of route_many before anything is routed."""
    out = Out(1)
    router = _router(out)
    router.route(Record(3, "x", "plain", time=1.0, pid=1))
    assert out.seen == ["plain"]

    def broken(records):
        raise KeyError("tap")
    router.tap = broken
    with pytest.raises(KeyError):
        router.route(Record(3, "x", "lost", time=1.0, pid=1))
    assert out.seen == ["plain"]
    router.tap = None
    router.route(Record(3, "x", "again", time=1.0, pid=1))
    assert out.seen == ["plain", "again"]
