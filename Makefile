# `make demo`: set up (cached venv) and run the whole pipeline on built-in synthetic data.
# `make test`: set up and run the test suite.
SHELL := /bin/bash
DEMO_OUT ?= demo_out

.PHONY: setup demo test bench

setup:
	@scripts/venv.sh >/dev/null

demo:
	@venv=$$(scripts/venv.sh) && "$$venv/bin/xpgan" demo --out "$(DEMO_OUT)"

test:
	@venv=$$(scripts/venv.sh) && "$$venv/bin/python" -m pytest -q

bench:
	@venv=$$(scripts/venv.sh) && "$$venv/bin/xpgan" bench drr && "$$venv/bin/python" bench/prep_bench.py
