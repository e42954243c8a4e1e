# Two commands matter: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test soak bench loadtest interop venv system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# System packages the tests need (headless Chromium for the status-page test, systemd-analyze for
# unit checks, FUSE 3 for the power-cut rig and pyfuse3's build). Installed only when missing, only as root.
system-deps:
	@bash scripts/system-deps.sh

# pyfuse3 for the power-cut rig, built after system-deps; where it cannot be built (no libfuse3-dev and
# not root) the power-cut tests skip and say why, and the next `make test` tries again.
POWERCUT := $(VENV)/.powercut
$(POWERCUT): pyproject.toml | $(STAMP) system-deps
	@$(PY) -m pip install --quiet -e '.[test,powercut]' && touch $(POWERCUT) || \
	  echo "make: pyfuse3 could not be built (needs fuse3, libfuse3-dev, pkg-config: make system-deps as root); the power-cut tests will skip" >&2

demo: venv
	$(VENV)/bin/station demo

test: venv system-deps $(POWERCUT)
	$(PY) -m pytest -q

# Long variants of the reliability tests (200 SIGKILLs, 100 + 40 power cuts on the FUSE rig, 100k serial
# frames, 10k OCPP frames, ...); ends with the reliability summary table (trials, faults injected, events
# checked, lost, duplicated, crashes, forgotten accepted requests, failed restarts, lockouts).
soak: venv system-deps $(POWERCUT)
	STATION_SOAK=1 $(PY) -m pytest -q -m slow --runslow

bench: venv
	$(PY) -m tests.bench

loadtest: venv
	$(PY) -m tests.bench.loadtest_fleet

# The station against CitrineOS's quirks (dev CSMS, both OCPP versions), and against a CitrineOS the
# operator runs when CITRINEOS_URL says where (docs/interop.md); prints the results table. Not in `make test`.
interop: venv
	$(PY) -m station.devtools.interop

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis bench-results.json loadtest-results.json
