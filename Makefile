# The two commands of the README, plus the benchmark.
.PHONY: setup run test bench install

setup:
	bash scripts/setup.sh

# The README's two commands are the scripts ./run and ./test (a fresh Debian has no make);
# these targets are the same commands for those who type make.
run:
	bash ./run

test:
	bash ./test

bench: setup
	.venv/bin/python bench/run.py

# The systemd units, /etc/virlogd.conf and the logrotate file (as root).
install:
	bash scripts/install.sh
