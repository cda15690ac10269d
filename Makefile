# The README's two commands: `make run` (demo end to end) and `make test` (the whole suite).
# Both start from nothing: they create .venv and install the project with the versions
# pinned in requirements.lock (compiled from pyproject.toml; `make lock` refreshes it).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
LOCK   := requirements.lock
# uv installs the same pinned environment in seconds where pip takes minutes. When it is not
# on PATH it is bootstrapped from the package registry with the system Python's pip into
# .uv-bootstrap/ (a wheel from the registry, no downloaded binaries).
UV_BOOT := .uv-bootstrap
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# uv installs without compiling bytecode (compiling all 150 packages would add ~20 s to
# set-up); Python then writes each module's .pyc on its first import, once, unless this
# is set (empty = off): without the cache every command re-compiles ~3 s of imports.
export PYTHONDONTWRITEBYTECODE :=
export PREFECT_LOGGING_LEVEL ?= WARNING

.PHONY: setup run test demo-inbox clean chromium lock
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# A failed install removes .venv and leaves no stamp, so the next `make` starts again from
# nothing instead of trusting a half-made environment.
$(STAMP): pyproject.toml $(LOCK)
	@rm -f $(STAMP)
	@UV=$$(command -v uv || true); \
	if [ -z "$$UV" ] && [ -x $(UV_BOOT)/bin/uv ]; then UV=$(UV_BOOT)/bin/uv; fi; \
	if [ -z "$$UV" ]; then \
	  $(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(UV_BOOT) uv >/dev/null 2>&1 \
	    && [ -x $(UV_BOOT)/bin/uv ] && UV=$(UV_BOOT)/bin/uv; \
	fi; \
	rm -rf $(VENV); \
	if [ -n "$$UV" ]; then \
	  { $$UV venv --quiet --python $(PYTHON) $(VENV) \
	    && $$UV pip sync --quiet --python $(BIN)/python $(LOCK) \
	    && $$UV pip install --quiet --python $(BIN)/python --no-deps -e . ; } \
	  || { rm -rf $(VENV); echo "setup: uv could not install the locked environment (see above)"; exit 1; }; \
	else \
	  echo "setup: uv is not available (pip could not install it); installing with pip instead, which takes a few minutes"; \
	  { $(PYTHON) -m venv $(VENV) \
	    && $(BIN)/pip install --quiet --disable-pip-version-check -r $(LOCK) \
	    && $(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e . ; } \
	  || { rm -rf $(VENV); echo "setup: pip could not install the locked environment (see above)"; exit 1; }; \
	fi
	touch $(STAMP)

setup: $(STAMP)

# Re-resolve the pins after editing pyproject.toml's dependencies (needs uv; commit the result).
lock:
	@UV=$$(command -v uv || echo $(UV_BOOT)/bin/uv); \
	$$UV pip compile pyproject.toml --extra test --python-version 3.11 --quiet -o $(LOCK)

# Copy the demo inbox (seeded simulated files + sample sheet + registry) and process it
# in-process (no Prefect server needed); then print the per-patient timeline.
run: setup
	mkdir -p data/inbox
	cp -R examples/demo_inbox/. data/inbox/
	$(BIN)/graftwatch run --inbox data/inbox --store data/store
	$(BIN)/graftwatch query "SELECT patient_id, sample_id, days_post_mst AS day, cycle, round(cd3_pct_lymph, 1) AS cd3, round(cd4_pct_lymph, 1) AS cd4, round(cd8_pct_lymph, 1) AS cd8, round(cd4_cd8_ratio, 2) AS cd4_cd8, round(th1_pct_cd4, 1) AS th1, round(th2_pct_cd4, 1) AS th2, round(th17_pct_cd4, 1) AS th17, round(treg_pct_cd4, 1) AS treg FROM immune_timeline WHERE patient_id IS NOT NULL ORDER BY patient_id, day" --store data/store
	$(BIN)/graftwatch query "SELECT patient_id, sample_id, days_post_mst AS day, cell_fraction, method, donor_id, round(donor_pct, 3) AS donor_pct, round(ci_low, 3) AS ci_low, round(ci_high, 3) AS ci_high, lod_pct, detected, status FROM chimerism_timeline ORDER BY patient_id, day, method" --store data/store
	$(BIN)/graftwatch cohort --store data/store --out data/cohort.html

# Regenerate examples/demo_inbox from the seeded simulators (only when they change).
demo-inbox: setup
	$(BIN)/python examples/build_demo.py examples/demo_inbox

# The report test opens the HTML in headless Chromium (Debian's package), installed when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Two workers (pytest-xdist). Each takes whole groups: a test file, or all the files that use
# the suite's shared Prefect server (tests/conftest.py says which and why), heaviest first; a
# file's module fixtures, such as the running watcher of tests/test_watch.py, stay in one process.
test: setup chromium
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

clean:
	rm -rf data .pytest_cache
