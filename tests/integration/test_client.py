"""The library's client side: Client, VirlogdHandler and the x:virlogd output, against a real
server on a real socket (in this process, or ``serve.py`` in its own)."""
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

import virlogd
from serve import InProcessServer
from virlogd.client.client import Client
from virlogd.client.handler import VirlogdHandler
from virlogd.core.record import Record
from virlogd.protocol import wire

SERVE = os.path.join(os.path.dirname(__file__), "serve.py")


@pytest.fixture
def server(tmp_path):
    srv = InProcessServer(str(tmp_path / "sock"))
    yield srv
    srv.stop()


def python(program, *args, stderr=""):
    """Run *program* in a new interpreter; return (pid, stdout). Its stderr must be
    *stderr*."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(program), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert err == stderr
    return proc.pid, out


class TestClient:
    def test_records_arrive_in_order_with_the_senders_pid(self, server):
        """What one Client sends arrives complete, in order, under this process's pid."""
        with Client(server.path) as client:
            for i in range(5000):
                client.send(Record(2, "c", f"m{i}"))
        records = server.wait_for(5000, "c")
        assert [r.message for r in records] == [f"m{i}" for i in range(5000)]
        assert {r.pid for r in records} == {os.getpid()}

    def test_a_record_is_written_before_send_returns(self, server):
        """The default: the first send connects and writes the frame in the caller's
        thread; nothing is left for the background thread."""
        client = Client(server.path)
        client.send(Record(3, "direct", "in the kernel already"))
        assert (client.connected, len(client._queue), client._thread) == (True, 0, None)
        assert server.wait_for(1, "direct")[0].message == "in the kernel already"
        client.close()

    def test_a_quiet_batching_client_is_flushed_without_being_asked(self, server):
        """direct=False: the record waits in the queue, and the background thread writes
        it within milliseconds even if nobody calls flush()."""
        client = Client(server.path, direct=False)
        client.send(Record(3, "quiet", "on its own"))
        assert len(client._queue) == 1
        assert server.wait_for(1, "quiet")[0].message == "on its own"
        client.close()

    def test_records_are_flushed_at_interpreter_exit(self, server):
        """A program that exits without flush() or close() still delivers its records."""
        pid, _ = python(f"""
            from virlogd.client.client import Client
            from virlogd.core.record import Record
            c = Client({server.path!r}, delay=60)
            c.send(Record(2, "exit", "last words"))
        """)
        record, = server.wait_for(1, "exit")
        assert (record.message, record.pid) == ("last words", pid)

    def test_threads_share_a_client_and_each_keeps_its_order(self, server):
        """Thread-safe: 4 threads x 5,000 records through one Client, none lost or mixed."""
        client = Client(server.path)

        def worker(name):
            for i in range(5000):
                client.send(Record(2, "threads", f"{name} {i}"))
        threads = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.close()
        messages = [r.message for r in server.wait_for(20000, "threads")]
        for n in range(4):
            assert [m for m in messages if m.startswith(f"t{n} ")] == \
                [f"t{n} {i}" for i in range(5000)]

    def test_a_forked_child_sends_under_its_own_pid_without_repeating_the_parent(self,
                                                                                  tmp_path):
        """After fork() the child starts from a clean client: the record its parent had
        queued (no daemon yet) is sent once, by the parent; the child's carries its pid."""
        path = str(tmp_path / "sock")
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import os, sys, time
            from virlogd.client.client import Client
            from virlogd.core.record import Record
            c = Client({path!r})
            c.send(Record(2, "fork", "queued by the parent"))     # nobody listens yet
            assert len(c._queue) == 1
            child = os.fork()
            if child == 0:
                assert len(c._queue) == 0 and c.undelivered == 0
                while not os.path.exists({path!r}):
                    time.sleep(0.01)
                c.send(Record(2, "fork", "from the child"))
                c.flush()
                os._exit(0)
            print(child, flush=True)
            os.waitpid(child, 0)
            c.close()
        """)], stdout=subprocess.PIPE, text=True)
        try:
            child = int(proc.stdout.readline())
            with InProcessServer(path) as server:
                assert proc.wait(30) == 0
                records = server.wait_for(2, "fork")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert sorted((r.message, r.pid) for r in records) == \
            [("from the child", child), ("queued by the parent", proc.pid)]

    def test_an_unreachable_daemon_never_raises(self, tmp_path):
        """Sending to nobody is held and counted, not an exception in the program."""
        client = Client(str(tmp_path / "nobody"), hold=10)
        for i in range(25):
            client.send(Record(2, "x", f"m{i}"))
        assert client.flush() is False
        assert (client.dropped, client.connected) == (15, False)
        assert client.last_error == "No such file or directory"
        client.close()

    def test_records_held_while_the_daemon_is_away_are_delivered_when_it_returns(self,
                                                                                  tmp_path):
        """Within the hold bound nothing is lost: the records wait for the daemon."""
        path = str(tmp_path / "sock")
        client = Client(path, hold=100)
        for i in range(50):
            client.send(Record(2, "held", f"h{i}"))
        assert client.flush() is False
        with InProcessServer(path) as server:
            assert client.flush() is True
            assert [r.message for r in server.wait_for(50, "held")] == \
                [f"h{i}" for i in range(50)]
            assert server.records("virlogd.client") == []
        client.close()

    def test_a_restart_drops_only_beyond_the_hold_bound_and_reports_the_count(self, tmp_path):
        """The client reconnects to the new daemon; the oldest records beyond `hold` are
        dropped, counted, and reported first thing once the daemon is back."""
        path = str(tmp_path / "sock")
        client = Client(path, hold=100)
        with InProcessServer(path) as first:
            client.send(Record(3, "survivor", "before the restart"))
            client.flush()
            first.wait_for(1, "survivor")
        for i in range(300):                            # nobody listens now
            client.send(Record(3, "survivor", f"during {i}"))
        client.flush()
        with InProcessServer(path) as second:
            client.send(Record(3, "survivor", "after the restart"))
            client.flush()
            records = second.wait_for(102)
            assert records[0].source == "virlogd.client"
            assert records[0].message == \
                "200 record(s) dropped while the daemon was unreachable"
            assert (records[0].priority, records[0].pid) == (3, os.getpid())
            assert [r.message for r in records[1:]] == \
                [f"during {i}" for i in range(200, 300)] + ["after the restart"]
        assert client.dropped_total == 200
        client.close()

    def test_records_a_killed_daemon_never_read_are_sent_again_by_the_last_flush(self,
                                                                                tmp_path):
        """A program's last records, written straight into the socket of a daemon killed
        before it read them, are not lost because no later record finds the connection
        dead: flush() (and so close() and the exit hook) notices the daemon's end is
        closed, reconnects and sends them again."""
        path = str(tmp_path / "sock")
        listener, client, conn = _daemon_and_client(path)
        for i in range(3):
            client.send(Record(2, "last.words", f"bye {i}"))
        conn.close()                    # killed: the frames in its socket are thrown away
        listener.close()
        os.unlink(path)
        srv = InProcessServer(path)     # the daemon, restarted
        try:
            assert client.flush()
            assert [r.message for r in srv.wait_for(3, "last.words")] == [
                "bye 0", "bye 1", "bye 2"]
            assert client.resent_total == 3 and client.undelivered == 0
        finally:
            client.close()
            srv.stop()

    def test_records_a_killed_daemon_never_read_are_counted_when_none_comes_back(
            self, tmp_path, capsys):
        path = str(tmp_path / "sock")
        listener, client, conn = _daemon_and_client(path)
        for i in range(2):
            client.send(Record(2, "last.words", f"bye {i}"))
        conn.close()
        listener.close()
        os.unlink(path)
        assert not client.flush()
        assert client.undelivered == 2
        client.close()
        assert capsys.readouterr().err == (
            f"virlogd: warning: 2 records were not delivered to virlogd at {path}: "
            f"No such file or directory\n")

    def test_a_flush_after_the_daemon_stopped_cleanly_has_nothing_to_send_again(self,
                                                                              tmp_path):
        """A daemon that read and confirmed every record, then closed the connection: the
        last flush reads the confirmation before the end of the stream, so nothing is sent
        again and nothing is reported, though no daemon is left to connect to."""
        path = str(tmp_path / "sock")
        listener, client, conn = _daemon_and_client(path)
        for i in range(3):
            client.send(Record(2, "clean.stop", f"n {i}"))
        decoder, got = wire.FrameDecoder(), []
        while len(got) < 3:
            got += decoder.feed(conn.recv(65536))
        with client._send_lock:         # (its listener thread does not read them first)
            conn.sendall(wire.encode_answer(3))
            conn.close()
            listener.close()
            os.unlink(path)
        assert client.flush() and client.undelivered == 0 and client.resent_total == 0
        client.close()

    def test_a_client_in_another_process_survives_a_daemon_restart(self, tmp_path):
        """serve.py killed with SIGTERM and started again: the same client carries on."""
        path, log = str(tmp_path / "sock"), tmp_path / "out.log"

        def start():
            proc = subprocess.Popen([sys.executable, SERVE, path, str(log)],
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdout.readline() == "ready\n"
            return proc

        daemon = start()
        client = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from virlogd.client.client import Client
            from virlogd.core.record import Record
            c = Client({path!r})
            for line in sys.stdin:
                c.send(Record(2, "s", line.strip())); c.flush()
                print("sent", flush=True)
            c.close()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            client.stdin.write("one\n")
            client.stdin.flush()
            assert client.stdout.readline() == "sent\n"
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(10) == 0
            daemon = start()
            client.stdin.write("two\n")
            client.stdin.close()
            assert client.wait(10) == 0
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(10)
            if client.poll() is None:
                client.kill()
                client.wait()
        lines = re.findall(r": (\d+): info : (?:s : )?(\w+)$", log.read_text(), re.M)
        assert lines == [(str(client.pid), "one"), (str(client.pid), "two")]


def _daemon_and_client(path: str):
    """A bare listening socket standing for the daemon, a Client connected to it, and the
    daemon's end of that connection."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    client = Client(path)
    assert client.open()
    conn, _ = listener.accept()
    return listener, client, conn


class TestHandler:
    @pytest.fixture
    def logger(self, server):
        handler = VirlogdHandler(server.path)
        log = logging.getLogger("app.handler.test")
        log.addHandler(handler)
        log.setLevel(1)
        log.propagate = False
        yield log
        log.removeHandler(handler)
        handler.close()

    def test_logging_levels_map_to_the_four_priorities(self, server, logger):
        """DEBUG/INFO/WARNING/ERROR/CRITICAL -> 1/2/3/4/4, and below DEBUG -> 1."""
        for level in (5, logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR,
                      logging.CRITICAL):
            logger.log(level, "level %d", level)
        logger.handlers[0].flush()
        records = server.wait_for(6, "app.handler.test")
        assert [r.priority for r in records] == [1, 1, 2, 3, 4, 4]
        assert records[0].message == "level 5"

    @pytest.mark.parametrize("created", [float("nan"), float("inf"), -1.0])
    def test_a_record_with_an_impossible_time_costs_only_itself(self, server, logger, created,
                                                                 capsys):
        """A LogRecord whose created was forged (NaN, infinite, negative) is refused by the
        handler with a ValueError through handleError; the connection survives, so the
        records after it still arrive (the daemon would drop a connection that sent it)."""
        bad = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "forged", None, None)
        bad.created = created
        logger.handle(bad)
        logger.info("after")
        logger.handlers[0].flush()
        records = server.wait_for(1, "app.handler.test")
        assert [r.message for r in records] == ["after"]
        assert f"ValueError: invalid time {created!r} (expected 0 to 253402300799)" in \
            capsys.readouterr().err

    def test_the_call_site_and_time_travel_with_the_record(self, server, logger):
        """funcName/lineno/pathname become func/line/file; created becomes the time."""
        def probe():
            logger.info("here")
            return sys._getframe().f_lineno - 1
        line = probe()
        logger.handlers[0].flush()
        record, = server.wait_for(1, "app.handler.test")
        assert (record.func, record.line, record.file) == ("probe", line, __file__)
        assert record.pid == os.getpid()

    def test_exc_info_becomes_the_stack(self, server, logger):
        """logger.exception() sends the formatted traceback as the record's stack."""
        try:
            raise KeyError("missing")
        except KeyError:
            logger.exception("lookup failed")
        logger.handlers[0].flush()
        record, = server.wait_for(1, "app.handler.test")
        assert record.message == "lookup failed"
        assert record.stack.startswith("Traceback (most recent call last):\n")
        assert record.stack.endswith("KeyError: 'missing'\n")

    def test_upper_case_extra_keys_become_fields(self, server, logger):
        """extra={"MESSAGE_ID": ...} is a field; lower-case extras stay the program's own."""
        logger.warning("tagged", extra={"MESSAGE_ID": "8ae2f3fb-2dbe", "LIBVIRT_CODE": 1,
                                        "request_id": "r-1", "MESSAGE": "forged"})
        logger.handlers[0].flush()
        record, = server.wait_for(1, "app.handler.test")
        assert record.fields == {"MESSAGE_ID": "8ae2f3fb-2dbe", "LIBVIRT_CODE": "1",
                                 "X_MESSAGE": "forged"}
        assert record.message == "tagged"

    def test_the_handlers_filters_decide_and_threads_need_no_handler_lock(self, server,
                                                                           logger):
        """handle() runs the handler's filters (a veto is not sent, and handle says so), and
        emits without the handler's lock: eight threads at once lose nothing, each in its
        own order."""
        handler = logger.handlers[0]
        handler.addFilter(lambda record: "secret" not in record.getMessage())
        assert handler.handle(logger.makeRecord(logger.name, logging.INFO, "f", 1,
                                                "a secret", (), None)) is False

        def worker(k):
            for i in range(200):
                logger.info("t%d %d", k, i)
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        logger.info("a secret too")
        handler.flush()
        records = server.wait_for(1600, "app.handler.test")
        assert len(records) == 1600 and not any("secret" in r.message for r in records)
        for k in range(8):
            assert [r.message for r in records if r.message.startswith(f"t{k} ")] == \
                [f"t{k} {i}" for i in range(200)]

    def test_the_handler_is_exported_by_the_package(self):
        """virlogd.VirlogdHandler is the class users import."""
        assert virlogd.VirlogdHandler is VirlogdHandler

    def test_a_handler_with_no_daemon_does_not_disturb_the_program(self, tmp_path, capsys):
        """No exception and nothing on stderr while the daemon is away (the client holds);
        closing the handler says, once, what was not delivered."""
        path = str(tmp_path / "nobody")
        handler = VirlogdHandler(path)
        log = logging.getLogger("app.handler.lonely")
        log.addHandler(handler)
        log.propagate = False
        log.error("nobody listens")
        log.error("still nobody")
        assert capsys.readouterr().err == ""
        assert handler.undelivered == 2
        handler.close()
        log.removeHandler(handler)
        handler.close()
        assert capsys.readouterr().err == (
            f"virlogd: warning: 2 records were not delivered to virlogd at {path}: "
            f"No such file or directory\n")


class TestNothingSilentAtExit:
    """A program whose daemon is not there exits 0 as before (logging never fails it), and
    writes exactly one line on stderr saying what was not delivered, where and why."""

    def test_a_handler_program_says_at_exit_what_it_could_not_deliver(self, tmp_path):
        """12 records to nobody, no close(), a normal exit: atexit and logging.shutdown
        both run, and the line is written once."""
        path = str(tmp_path / "nobody")
        _, out = python(f"""
            import logging, virlogd
            handler = virlogd.VirlogdHandler({path!r})
            logging.basicConfig(handlers=[handler], level=logging.INFO)
            for i in range(12):
                logging.getLogger("app").info("record %d", i)
            print(handler.undelivered)
        """, stderr=f"virlogd: warning: 12 records were not delivered to virlogd at {path}: "
                    f"No such file or directory\n")
        assert out == "12\n"

    def test_logging_shutdown_reports_once_and_exit_adds_nothing(self, tmp_path):
        """logging.shutdown() (what a program calls before it exits on its own) writes the
        line; the interpreter's exit afterwards writes no second one."""
        path = str(tmp_path / "nobody")
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import logging, sys, virlogd
            logging.getLogger().addHandler(virlogd.VirlogdHandler({path!r}))
            logging.error("lost")
            logging.shutdown()
            print("after shutdown", file=sys.stderr)
        """)], capture_output=True, text=True, timeout=30)
        assert (proc.returncode, proc.stderr) == (0, (
            f"virlogd: warning: 1 record was not delivered to virlogd at {path}: "
            f"No such file or directory\nafter shutdown\n"))

    def test_the_librarys_virlogd_output_reports_at_exit(self, tmp_path):
        """LIBVIRT_LOG_OUTPUTS=1:virlogd:SOCKET with nobody there: one line at exit."""
        path = str(tmp_path / "nobody")
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent("""
            import virlogd
            log = virlogd.getLogger("lib")
            for i in range(3):
                log.warning("lost %d", i)
        """)], env=dict(os.environ, LIBVIRT_LOG_OUTPUTS=f"1:virlogd:{path}"),
            capture_output=True, text=True, timeout=30)
        assert (proc.returncode, proc.stderr) == (0, (
            f"virlogd: warning: 3 records were not delivered to virlogd at {path}: "
            f"No such file or directory\n"))

    def test_a_refused_connection_is_the_reason_given(self, tmp_path):
        """A socket file nobody listens on (a daemon killed): "Connection refused"."""
        path = str(tmp_path / "stale")
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        python(f"""
            from virlogd.client.client import Client
            from virlogd.core.record import Record
            Client({path!r}).send(Record(2, "x", "lost"))
        """, stderr=f"virlogd: warning: 1 record was not delivered to virlogd at {path}: "
                    f"Connection refused\n")

    def test_a_program_whose_records_all_arrived_says_nothing(self, server):
        python(f"""
            import logging, virlogd
            logging.basicConfig(handlers=[virlogd.VirlogdHandler({server.path!r})])
            logging.warning("delivered")
        """)
        assert server.wait_for(1)[0].message == "delivered"


class TestLibraryOutput:
    def test_the_virlogd_output_sends_library_records_with_the_programs_pid(self, server):
        """configure(outputs="1:virlogd:SOCKET") delivers to the daemon, flushed at exit."""
        pid, _ = python(f"""
            import virlogd
            virlogd.configure(outputs="1:virlogd:{server.path}", level=1)
            log = virlogd.getLogger("lib.out")
            log.debug("from the library", message_id="abc-1")
        """)
        record, = server.wait_for(1, "lib.out")
        assert (record.message, record.priority, record.pid) == ("from the library", 1, pid)
        assert record.fields == {"MESSAGE_ID": "abc-1"}
        assert record.func == "<module>"

    def test_the_virlogd_output_never_raises_when_the_daemon_is_away(self, tmp_path):
        """An unreachable daemon is counted as the output's drops, not an error; closing
        the output says how many records were not delivered (3 dropped, 5 held)."""
        nobody = str(tmp_path / "nobody")
        _, out = python(f"""
            import virlogd
            from virlogd.outputs import OutputContext, build
            from virlogd.core.specs import OutputSpec
            from virlogd.core.record import Record
            out = build(OutputSpec(1, "virlogd", {str(tmp_path / "nobody")!r}),
                        OutputContext())
            out.client.hold = 5
            for i in range(8):
                out.handle(Record(2, "s", "m"), "")
            out.client.flush()
            print(out.dropped, out.failed)
            out.close()
        """, stderr=f"virlogd: warning: 8 records were not delivered to virlogd at {nobody}: "
                    f"No such file or directory\n")
        assert out.split() == ["3", "0"]

    def test_each_level_method_and_log_record_the_callers_site(self, server):
        """debug/info/warning/error (one implementation) and log() take the call site of
        the program's line, whichever path the call takes: routed to the x:virlogd output,
        with fields, or only kept by the ring (read back with a dump)."""
        _, out = python(f"""
            import virlogd
            virlogd.configure(outputs="1:virlogd:{server.path} 1:file:{server.path}.txt",
                              level=1, filters="2:lib.ring")
            log, ring = virlogd.getLogger("lib.site"), virlogd.getLogger("lib.ring")

            def caller():
                log.debug("d %d", 1)
                log.info("i")
                log.warning("w", message_id="m-1")
                log.error("e %s", "x")
                log.log(2, "l")
                ring.debug("kept %s", "here")
            caller()
            virlogd.dump_buffer("why")
            print(caller.__code__.co_firstlineno)
        """)
        first = int(out)
        records = server.wait_for(5, "lib.site")
        assert [(r.message, r.priority, r.func, r.line - first) for r in records] == [
            ("d 1", 1, "caller", 1), ("i", 2, "caller", 2), ("w", 3, "caller", 3),
            ("e x", 4, "caller", 4), ("l", 2, "caller", 5)]
        assert records[2].fields == {"MESSAGE_ID": "m-1"}
        assert all(r.file.endswith("<string>") or r.file == "<string>" for r in records)
        with open(server.path + ".txt") as text:
            kept = [line for line in text if "kept here" in line]
        assert len(kept) == 1 and f": debug : caller:{first + 6} : kept here" in kept[0]

    def test_a_call_nobody_wants_checks_its_fields_and_logs_nothing(self, server):
        _, out = python(f"""
            import virlogd
            virlogd.configure(outputs="3:virlogd:{server.path}", level=3, buffer_size=0)
            log = virlogd.getLogger("lib.quiet")
            log.debug("no")
            log.info("no %d", 1, message_id="x")
            try:
                log.info("no", color="red")
            except TypeError as err:
                print(err)
            log.warning("yes")
        """)
        assert out == ("unexpected keyword argument 'color' (use message_id, domain, code, "
                       "fields or exc_info)\n")
        assert [r.message for r in server.wait_for(1, "lib.quiet")] == ["yes"]

    def test_the_routers_counters_and_the_clients_drops_are_the_outputs(self, server):
        """The router counts what the x:virlogd output's handle() took; the output's
        dropped is what its client dropped."""
        _, out = python(f"""
            import virlogd
            from virlogd.client import library
            virlogd.configure(outputs="2:virlogd:{server.path}", level=2, buffer_size=0)
            log = virlogd.getLogger("lib.count")
            for i in range(3):
                log.info("n %d", i)
            out, = library._get_router().state.outputs
            print(out.written, out.failed, out.dropped)
        """)
        assert out.split() == ["3", "0", "0"]
        assert len(server.wait_for(3, "lib.count")) == 3
