"""What runs in the daemon: its assembly, the sockets it serves, admin, signals, systemd, crash handling."""
