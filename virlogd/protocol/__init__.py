"""The wire between a program and the daemon: frames, the client's frame queue, replay after a reconnect."""
