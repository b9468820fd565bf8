"""What runs inside every program: the library, the connection to the daemon, the logging handler."""
