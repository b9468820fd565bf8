"""Filter and output strings (``LIBVIRT_LOG_FILTERS``, ``log_outputs``, ``virlogd-admin``).

Each input, as text (invalid UTF-8 kept as lone surrogates, as ``surrogateescape`` gives the
environment's bytes), is parsed both as a filter string and as an output string. The parsers
never raise; they return the specs before the first bad token and its error, whose message
names the token. What they accept must print back (``format_*``, what ``virlogd-admin``
shows) to a string that parses to the same specs. The accepted specs then run: a FilterSet
decides for a few sources, and records from those sources are routed under each profile's
ring and level through the filters and the outputs the input named (confined).
"""
from harness import CHECK_SPEC, CTX, PROFILES, SCRATCH, FilterSet, LineCheck, RingBuffer, \
    Router, RouterState, check, confined_build, record, specs

SOURCES = ("qemu.monitor", "util.log", "", "x*y", "virlogd.server")


def setup():
    rings = {p.name: RingBuffer(p.ring_kb * 1024) if p.ring_kb else None for p in PROFILES}

    def one_input(data: bytes) -> None:
        text = data.decode("utf-8", "surrogateescape")
        filters, ferror = specs.parse_filters(text)
        outputs, oerror = specs.parse_outputs(text, SCRATCH)
        for error in (ferror, oerror):
            if error is not None and repr(error.token)[1:-1] not in repr(error.message):
                raise AssertionError(f"the error does not name its token: {error.message!r}")
        again, error = specs.parse_filters(specs.format_filters(filters))
        if error is not None or again != filters:
            raise AssertionError(f"filters do not print back: {filters!r} -> {again!r}")
        again, error = specs.parse_outputs(specs.format_outputs(outputs), SCRATCH)
        if error is not None or again != outputs:
            raise AssertionError(f"outputs do not print back: {outputs!r} -> {again!r}")
        built = [LineCheck(CHECK_SPEC, CTX)]
        for spec in outputs[:16]:
            try:
                built.append(confined_build(spec, CTX))
            except OSError:
                pass
        try:
            sources = SOURCES + tuple(spec.match for spec in filters[:4])
            for p in PROFILES:
                router = Router(RouterState(FilterSet(filters, p.level), built), rings[p.name])
                router.route_many([record.Record(priority, source, "fuzz", func="virFuzz",
                                                 line=1, stack="Traceback: here",
                                                 time=1_700_000_000.0)
                                   for source in sources for priority in (1, 2, 3, 4)])
                router.flush()
            check()
        finally:
            for out in built:
                out.close()
    return one_input
