"""Messages for the compiled-vs-pure tables (``test_wire_twins.py``, ``test_textformat_twins.py``):
the odd ones, whose result or error must be Python's."""


class OddMessage:
    """Not a str: formats and converts through its own methods."""

    def __str__(self):
        return "odd"

    def __mod__(self, args):
        return "odd %r" % (args,)


MESSAGES = ["%s", "%d %s", "%(x)s", "100%", OddMessage(), 7, b"b"]
