# The two commands of the README, plus the benchmark.
.PHONY: setup run test bench install fuzz

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

# Coverage-guided fuzzing of every parser of outside input (fuzz/run.py): each target for
# FUZZ_SECONDS (300), in pure Python, then against the compiled module built with ASan and UBSan.
fuzz: setup
	.venv/bin/python fuzz/run.py --seconds $${FUZZ_SECONDS:-300}

# The systemd units, /etc/virlogd.conf and the logrotate file (as root).
install:
	bash scripts/install.sh
