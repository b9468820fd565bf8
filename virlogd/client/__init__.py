"""What runs inside every program: the library, its connection to the daemon, the handler."""
