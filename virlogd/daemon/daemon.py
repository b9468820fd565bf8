"""The daemon: settings in, sockets open, records routed until told to stop.

One thread runs everything (``loop.EventLoop``): client reads, admin requests, periodic
output housekeeping, signal work. Start-up order matters and is the contract with systemd:
the sockets are claimed first (bound and listening, so a second instance is refused before
it touches the ring file; a client that connects now waits in the kernel's queue), then the
ring is recovered and the outputs opened (so a recovered buffer has somewhere to go), then
the sockets are served, and only then ``READY=1``. Shutdown is the reverse, and loses
nothing: stop accepting, read what every client already sent, flush every output, mark the
ring clean.
"""
from __future__ import annotations

import os
import socket
import sys
from typing import Dict, List, Optional

from . import crash, signals, systemd
from ..core import defaults, safepath
from ..core.errors import ConfigError
from ..core.filters import FilterSet
from .loop import EventLoop
from .fallback import Fallback, NoOutput
from ..outputs import OutputContext, build, probe
from ..outputs.file import FileOutput
from ..core.priority import parse_priority
from ..core.record import Record
from ..core.ring import RingBuffer, RingSpaceError
from ..core.router import Router, RouterState
from ..core.settings import Settings
from .sockets import bind_unix
from ..core.specs import OutputSpec, format_filters, format_outputs, parse_filters, parse_outputs

FLUSH_INTERVAL = 0.5      # seconds between output housekeeping (rotation checks, retries)


class StartError(Exception):
    """The daemon cannot start; ``str()`` is the sentence for the administrator."""


class Daemon:
    def __init__(self, settings: Settings, *, detached: bool = False) -> None:
        self.settings = settings
        self.detached = detached
        self.loop = EventLoop()
        self.ctx = OutputContext(max_size=settings.max_size, max_backups=settings.max_backups,
                                 remote_ca_file=settings.remote_ca_file,
                                 remote_queue_size=settings.remote_queue_size)
        self.level = settings.log_level
        self.filters = list(settings.filters)
        self.output_specs: List[OutputSpec] = list(settings.outputs)
        self.ring: Optional[RingBuffer] = None
        self.router: Optional[Router] = None
        self.sockets: Dict[str, object] = {}
        self.bound_paths: List[str] = []          # sockets we created (and so remove)
        self.client_server = None
        self.admin_server = None
        self.syslog_input = None
        self.hangups = 0
        self.exit_status = 0
        self.own_socket: Optional[probe.OwnSocket] = None   # what x:virlogd must not name
        self.own_syslog: Optional[probe.OwnSocket] = None   # what x:syslog must not reach
        self._start_warnings: List[str] = []    # said on stderr, then logged once routed

    # -- start -----------------------------------------------------------------------
    def start(self) -> None:
        """Claim the sockets, recover a previous buffer, open outputs, then serve; raise
        StartError. The sockets come first: a live daemon on them means we are a second
        instance, which must not touch that daemon's ring file."""
        s = self.settings
        # handlers first: a signal that arrives once the socket accepts must already be ours
        # (they only queue work on the loop, which runs once start() is done)
        signals.install(self.loop, stop=self.stop, dump=self.dump_signal, hangup=self.hangup)
        self._check_runtime_dirs()
        self._claim_sockets()
        self.own_socket = self._own_socket()
        if s.syslog_socket_path:
            self.own_syslog = probe.OwnSocket.bound_at(s.syslog_socket_path)
        recovered = None
        ring_warning = None
        if s.log_buffer_size > 0:
            ring_file = defaults.ring_path(s.socket_path)
            try:
                recovered = RingBuffer.recover(ring_file)
                self.ring = RingBuffer(s.log_buffer_size * 1024, ring_file)
            except RingSpaceError as err:
                # a full runtime filesystem: a mapping it cannot back would die of SIGBUS
                ring_warning = self._ring_in_memory(ring_file, err)
            except OSError as err:
                raise StartError(f"cannot create the ring buffer file {ring_file}: "
                                 f"{err.strerror or err}") from None
        outputs = self._build_outputs(self._effective_specs(self.output_specs, self.level),
                                      strict=False)
        if not outputs:             # none could be opened: never run with no output at all
            outputs = [out for out in (self._open_default(self.level),) if out is not None]
            if outputs:
                self._warn(f"no output could be opened; records go to "
                           f"'{outputs[0].describe()}' instead")
            else:                   # each record fails here: counted as dropped, not lost
                outputs = [NoOutput(self.ctx)]
                self._warn("no output could be opened, nor the default output: records "
                           "will be counted as dropped")
        self.router = Router(RouterState(FilterSet(self.filters, self.level), outputs),
                             self.ring, dump_fallback=self._fallback_output)
        self.router.fallback = Fallback(self._open_fallback)
        for warning in self._start_warnings:
            self.log(3, "virlogd.output", warning)
        if ring_warning is not None:
            self.log(3, "virlogd.daemon", ring_warning)
        if recovered:
            self.router.dump("Previous virlogd run ended without stopping cleanly;",
                             recovered, recovered=True)
            self.router.flush()
        self._serve_sockets()
        self.loop.after_batch.append(self.router.flush)
        self.loop.call_every(FLUSH_INTERVAL, self._housekeeping)

    def _check_runtime_dirs(self) -> None:
        """The directories of our sockets and ring file: created if missing, and refused if
        another user owns them or may write to them (safepath), before anything is made
        there."""
        s = self.settings
        for path in dict.fromkeys((s.socket_path, s.admin_socket_path)):
            try:
                safepath.runtime_dir_for(path)
            except safepath.UnsafePath as err:
                raise StartError(str(err)) from None
            except OSError as err:
                raise StartError(f"cannot create the runtime directory "
                                 f"{os.path.dirname(os.path.abspath(path))}: "
                                 f"{err.strerror or err}") from None

    def _ring_in_memory(self, ring_file: str, err: OSError) -> str:
        """Keep the ring in memory (its file could not be backed); returns the warning."""
        self.ring = RingBuffer(self.settings.log_buffer_size * 1024)
        try:
            os.unlink(ring_file)        # recovered already; a stale file must not dump twice
        except OSError:
            pass
        warning = (f"cannot reserve space for the ring buffer file {ring_file} "
                   f"({err.strerror or err}); keeping the ring buffer in memory: SIGKILL "
                   f"recovery is off")
        sys.stderr.write(f"virlogd: warning: {warning}\n")
        return warning

    def _claim_sockets(self) -> None:
        """Bind our sockets (or take systemd's); nothing is accepted until _serve_sockets."""
        s = self.settings
        expected = {systemd.CLIENT: s.socket_path, systemd.ADMIN: s.admin_socket_path}
        if s.syslog_socket_path:
            expected[systemd.SYSLOG] = s.syslog_socket_path
        activated = systemd.activated_sockets(expected=expected)
        plan = [(systemd.CLIENT, s.socket_path, socket.SOCK_STREAM, s.socket_perms,
                 s.socket_group),
                (systemd.ADMIN, s.admin_socket_path, socket.SOCK_STREAM, 0o600, None)]
        if s.syslog_socket_path:
            plan.append((systemd.SYSLOG, s.syslog_socket_path, socket.SOCK_DGRAM, 0o666, None))
        for role, path, kind, mode, group in plan:
            sock = activated.get(role)
            if sock is None:
                try:
                    if role == systemd.SYSLOG:
                        # SO_PASSCRED from the moment it is bound: a datagram arriving before
                        # the input is served must still carry its sender's pid
                        from .syslog_input import bind_syslog_socket
                        sock = bind_syslog_socket(path)
                    else:
                        sock = bind_unix(path, kind, mode=mode, group=group)
                except OSError as err:
                    raise StartError(f"cannot listen on {path}: {err.strerror or err}") \
                        from None
                self.bound_paths.append(path)
            self.sockets[role] = sock

    def _own_socket(self) -> probe.OwnSocket:
        """Our client socket as a file (an activated one's path is its own name)."""
        path = self.settings.socket_path
        try:
            name = self.sockets[systemd.CLIENT].getsockname()
        except (OSError, KeyError):
            name = None
        if isinstance(name, str) and name.startswith("/"):
            path = name
        return probe.OwnSocket.bound_at(path)

    def _serve_sockets(self) -> None:
        from .admin import AdminServer
        from .server import ClientServer
        s = self.settings
        self.client_server = ClientServer(self.loop, self.router, self.sockets[systemd.CLIENT],
                                          max_clients=s.max_clients,
                                          max_pending=s.max_pending_size)
        self.client_server.start()
        self.admin_server = AdminServer(self.loop, self, self.sockets[systemd.ADMIN])
        if systemd.SYSLOG in self.sockets:
            from .syslog_input import SyslogInput
            self.syslog_input = SyslogInput(self.loop, self.router, self.sockets[systemd.SYSLOG])

    def _fallback_output(self):
        """Where a dump goes when there is no text output: the default log file
        (``defaults.log_file``), the one a detached daemon writes to without journald."""
        path = defaults.log_file()
        defaults.make_log_dir(path)
        return FileOutput(OutputSpec(1, "file", path), self.ctx)

    def _default_chain(self, level: int) -> List[OutputSpec]:
        """The default output (``defaults.default_output``), then what follows it: the
        default file when detached, stderr in the foreground (detached, stderr is
        /dev/null)."""
        first = defaults.default_output(level, self.detached)
        chain = [first]
        if self.detached and first.dest != "file":
            chain.append(OutputSpec(level, "file", defaults.log_file()))
        if not self.detached and first.dest != "stderr":
            chain.append(OutputSpec(level, "stderr"))
        return chain

    def _open_default(self, level: int, skip=()):
        """The first output of the default chain that opens, at *level* (not one whose
        destination is in *skip*)."""
        for spec in self._default_chain(level):
            if (spec.dest, spec.name) in skip:
                continue
            built = self._build_outputs([spec], strict=False, quiet=True)
            if built:
                return built[0]
        return None

    def _open_fallback(self):
        """For records no output took: the default chain, less the outputs in use (they
        are the ones failing), at level 1 (it takes whatever the outputs did not)."""
        return self._open_default(1, skip={(out.spec.dest, out.spec.name)
                                           for out in self.router.state.outputs})

    def _warn(self, message: str) -> None:
        """A problem with an output: on stderr while starting (``-d`` prints it before it
        detaches: see cli), and in the log."""
        if self.router is None:
            sys.stderr.write(f"virlogd: warning: {message}\n")
            self._start_warnings.append(message)
        else:
            self.log(3, "virlogd.output", message)

    def _is_default_file(self, spec: OutputSpec) -> bool:
        return spec.dest == "file" and os.path.abspath(spec.name) == defaults.log_file()

    def _effective_specs(self, specs: List[OutputSpec], level: int) -> List[OutputSpec]:
        if specs:
            return specs
        return [defaults.default_output(level, self.detached)]

    def _build_outputs(self, specs: List[OutputSpec], *, strict: bool, reuse=(),
                       quiet: bool = False) -> list:
        """Live outputs for *specs*. At start an output that cannot be opened is skipped
        with a warning (the others must still work); a runtime change is all-or-nothing.
        ``outputs.probe`` says first what no open would (a directory, /proc/version, our own
        socket); an output whose receiver is away is kept, with a warning."""
        reusable = {str(out.spec): out for out in reuse}
        built, fresh = [], []
        for spec in specs:
            if str(spec) in reusable:
                built.append(reusable.pop(str(spec)))
                continue
            default_file = self._is_default_file(spec)
            try:
                issue = probe.problem(spec, own_socket=self.own_socket,
                                      own_syslog=self.own_syslog,
                                      remote_ca_file=self.settings.remote_ca_file,
                                      create_dirs=default_file)
                if issue is not None and issue.kind == probe.REFUSED:
                    raise ValueError(issue.reason)
                if issue is not None and not quiet:
                    self._warn(probe.describe(spec, issue))
                if default_file:
                    defaults.make_log_dir(spec.name)
                out = build(spec, self.ctx)
            except (OSError, ValueError) as err:
                reason = getattr(err, "strerror", None) or str(err)
                if strict:
                    for out in fresh:
                        out.close()
                    raise ConfigError(f"cannot open output '{spec}': {reason}") from None
                if not quiet:
                    self._warn(f"cannot open output '{spec}': {reason}; ignored")
                continue
            built.append(out)
            fresh.append(out)
        return built

    def _housekeeping(self) -> None:
        for out in self.router.state.outputs:
            try:
                out.poll()
            except Exception as err:  # noqa: BLE001 - a failing output never stops the daemon
                self.router._failed(out, err)

    # -- run and stop ----------------------------------------------------------------
    def run(self) -> int:
        systemd.notify(f"READY=1\nSTATUS=Accepting records on {self.settings.socket_path}\n"
                       f"MAINPID={os.getpid()}")
        self.log(2, "virlogd.daemon", f"virlogd started (pid {os.getpid()}), "
                                      f"listening on {self.settings.socket_path}")
        watchdog = systemd.watchdog_interval()
        if watchdog:            # WatchdogSec=: pinged from the loop, so a hung loop is restarted
            self.loop.call_every(watchdog, lambda: systemd.notify("WATCHDOG=1"))
        self.loop.run()
        return self.exit_status

    def stop(self) -> None:
        signals.block_stop_signals()
        systemd.notify("STOPPING=1")
        self.loop.stop()

    def shutdown(self) -> None:
        """Stop accepting, drain what clients already sent, flush and close everything."""
        if self.client_server is not None:
            self.client_server.stop_accepting()
            self.client_server.drain()
        if self.syslog_input is not None:
            self.syslog_input.drain()
        if self.admin_server is not None:
            self.admin_server.close()
        for role, sock in self.sockets.items():
            sock.close()
        for path in self.bound_paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        if self.router is not None:
            self.router.flush()
            self.router.close()
            if self.router.fallback is not None:
                self.router.fallback.close()
        if self.ring is not None:
            self.ring.close()
        self.loop.close()

    def emergency_dump(self, reason: str) -> None:
        """From a crash handler: write the buffer with what is at hand, then flush."""
        if self.router is not None:
            self.router.dump(reason)
            self.router.flush()
        if self.ring is not None:
            self.ring.close()    # dumped: nothing left for the next start to recover

    # -- signals ---------------------------------------------------------------------
    def dump_signal(self) -> None:
        self.router.dump("Caught User-defined signal 2")
        self.router.flush()

    def hangup(self) -> None:
        self.hangups += 1
        if self.hangups == 1:
            self.log(3, "virlogd.daemon", "SIGHUP ignored: virlogd does not reload its "
                                          "configuration; restart it to apply changes")

    def log(self, priority: int, source: str, message: str) -> None:
        self.router.route(Record(priority, source, message, func=None))

    # -- the admin interface (virlogd-admin) -----------------------------------------
    def get_filters(self) -> str:
        return format_filters(self.filters)

    def get_outputs(self) -> str:
        return format_outputs(self.output_specs) or \
            format_outputs(self._effective_specs([], self.level))

    def get_level(self) -> int:
        return self.level

    def get_outputs_setting(self) -> str:
        """The outputs as set, ``""`` for the default: what a timed change restores."""
        return format_outputs(self.output_specs)

    def set_filters(self, text: str, who: str) -> None:
        specs, error = parse_filters(text)
        if error is not None:
            raise ConfigError(error.in_string())
        old = self.get_filters()
        self.filters = specs
        self.router.apply(RouterState(FilterSet(specs, self.level), self.router.state.outputs))
        self.log(3, "virlogd.admin", f"log filters changed from \"{old}\" to "
                                     f"\"{self.get_filters()}\" by {who}")

    def set_outputs(self, text: str, who: str) -> None:
        specs, error = parse_outputs(text)
        if error is not None:
            raise ConfigError(error.in_string())
        old = self._outputs_in_effect()
        self._swap_outputs(specs, self.level)
        self.output_specs = specs
        self.log(3, "virlogd.admin", f"log outputs changed from {old} to "
                                     f"{self._outputs_in_effect()} by {who}")

    def _outputs_in_effect(self) -> str:
        """For the audit line: what records go to, the default output named as such."""
        return f'"{self.get_outputs()}"' + ("" if self.output_specs else " (the default)")

    def set_level(self, text: str, who: str) -> None:
        try:
            level = int(parse_priority(text.strip()))
        except ValueError as err:
            raise ConfigError(str(err)) from None
        old = self.level
        if not self.output_specs:          # the default output follows the default level
            self._swap_outputs([], level, filters=True)
        else:
            self.router.apply(RouterState(FilterSet(self.filters, level),
                                          self.router.state.outputs))
        self.level = level
        self.log(3, "virlogd.admin", f"log level changed from {old} to {level} by {who}")

    def _swap_outputs(self, specs: List[OutputSpec], level: int, filters=True) -> None:
        current = self.router.state.outputs
        new = self._build_outputs(self._effective_specs(specs, level), strict=True,
                                  reuse=current)
        self.router.apply(RouterState(FilterSet(self.filters, level), new))
        for out in current:
            if out not in new:
                try:
                    out.close()
                except Exception:  # noqa: BLE001
                    pass

    def dump(self) -> int:
        count = self.router.dump("Dump requested by virlogd-admin;")
        self.router.flush()
        return count

    def stats(self) -> dict:
        stats = self.router.stats()
        # the router counts every record it routed; "received" is the clients' (client socket
        # and syslog input), "own" the daemon's own (its start, admin changes, reports)
        received = (self.client_server.records if self.client_server is not None else 0) + \
            (self.syslog_input.received if self.syslog_input is not None else 0)
        stats["own"] = stats["received"] - received
        stats["received"] = received
        for out, shown in zip(self.router.state.outputs, stats["outputs"]):
            if not out.failing:         # it works (again): no error now; "failed" counts them
                shown["last_error"] = None
        fallback = self.router.fallback.stats_row() if self.router.fallback else None
        if fallback is not None:        # records no output took, written there instead
            stats["outputs"].append(fallback)
        if self.client_server is not None:
            server = self.client_server.stats()
            stats["clients"] = server.get("clients", 0)
            stats["server"] = server
        if self.admin_server is not None:   # refusals, changes, followers, timed changes
            stats.update(self.admin_server.stats())
        stats["sighup_ignored"] = self.hangups
        return stats


def install_crash_handlers(daemon: Daemon, die) -> None:
    crash.install(daemon.emergency_dump, die)
