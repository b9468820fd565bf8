# The two commands of the README, plus the benchmark.
.PHONY: setup run test bench install

setup:
	bash scripts/setup.sh

# The daemon in the foreground on a default that needs no root-owned path: sockets and the
# ring file under ./.run, records to stderr. Ctrl-C stops it cleanly.
run: setup
	mkdir -p .run
	.venv/bin/virlogd --socket .run/virlogd-sock --admin-socket .run/virlogd-admin-sock \
		--log-outputs "$${LIBVIRT_LOG_OUTPUTS:-2:stderr}"

test: setup
	bash scripts/test.sh -q

bench: setup
	.venv/bin/python bench/run.py

# The systemd units, /etc/virlogd.conf and the logrotate file (as root).
install:
	bash scripts/install.sh
