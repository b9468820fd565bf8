"""What a client sends again after losing the daemon: the frames it never acknowledged."""
from virlogd.protocol import wire
from virlogd.protocol.replay import Replay


def frames(*names):
    return [name.encode() for name in names]


def test_acknowledged_frames_are_forgotten_and_the_rest_sent_again_in_order():
    """Five written, three confirmed, daemon killed: the last two go out again, in order."""
    replay = Replay(100)
    replay.sent(frames("a", "b"))
    replay.sent(frames("c", "d", "e"))
    replay.answer(wire.encode_ack(3))
    assert len(replay) == 2
    again, lost = replay.lost_connection(frames("f", "g"))
    assert (again, lost) == (frames("d", "e", "f", "g"), 0)
    assert len(replay) == 0


def test_an_answer_cut_in_two_counts_once_whole():
    """Answers arrive on a stream: a partial one waits for the rest."""
    replay = Replay(100)
    replay.sent(frames("a", "b", "c"))
    ack = wire.encode_ack(2)
    replay.answer(ack[:5])
    assert len(replay) == 3
    replay.answer(ack[5:])
    assert len(replay) == 1


def test_a_failed_write_the_daemon_read_in_part_is_not_sent_twice():
    """The daemon routed two frames of the write that failed: only the rest go again."""
    replay = Replay(100)
    replay.sent(frames("a", "b"))
    replay.answer(wire.encode_ack(4))            # a, b and the first two of the failed write
    again, lost = replay.lost_connection(frames("c", "d", "e"))
    assert (again, lost) == (frames("e"), 0)


def test_frames_beyond_the_limit_that_were_never_confirmed_are_counted_lost():
    """The bound keeps memory flat; what it let go unconfirmed is counted, not forgotten."""
    replay = Replay(2)
    replay.sent(frames("a", "b", "c", "d", "e"))
    assert len(replay) == 2
    replay.answer(wire.encode_ack(1))            # only "a" was routed
    again, lost = replay.lost_connection()
    assert (again, lost) == (frames("d", "e"), 2)   # b and c: released, never confirmed


def test_an_old_answer_never_brings_frames_back():
    """Counts only grow: a smaller count read later changes nothing."""
    replay = Replay(100)
    replay.sent(frames("a", "b", "c"))
    replay.answer(wire.encode_ack(2))
    replay.answer(wire.encode_ack(1))
    assert replay.lost_connection() == (frames("c"), 0)


def test_a_new_connection_starts_counting_afresh():
    """Counts are per connection: after lost_connection the next answer counts from zero."""
    replay = Replay(100)
    replay.sent(frames("a", "b"))
    replay.answer(wire.encode_ack(2))
    again, _ = replay.lost_connection()
    assert again == []
    replay.sent(frames("c", "d"))
    replay.answer(wire.encode_ack(1))
    assert replay.lost_connection() == (frames("d"), 0)
