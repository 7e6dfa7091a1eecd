# `make demo`: set up (cached venv) and run the whole pipeline on built-in synthetic data.
# `make test`: set up, lint (ruff) and run the whole test suite; `make test-fast`: the suite without slow tests.
SHELL := /bin/bash
DEMO_OUT ?= demo_out

.PHONY: setup demo test test-fast lint bench

setup:
	@scripts/venv.sh >/dev/null

demo:
	@venv=$$(scripts/venv.sh) && "$$venv/bin/xpgan" demo --out "$(DEMO_OUT)"

lint:
	@venv=$$(scripts/venv.sh) && "$$venv/bin/ruff" check .

test: lint
	@venv=$$(scripts/venv.sh) && "$$venv/bin/python" -m pytest -q

# the edit loop: everything but the tests marked slow (end-to-end runs, training, clusters), about a minute
test-fast:
	@venv=$$(scripts/venv.sh) && "$$venv/bin/python" -m pytest -q -m "not slow"

bench:
	@venv=$$(scripts/venv.sh) && "$$venv/bin/xpgan" bench drr && "$$venv/bin/xpgan" bench prep
