"""The three commands: virlogd, virlog and virlogd-admin."""
