# The README's two commands: `make run` (demo end to end) and `make test` (the whole suite).
# Both start from nothing: they create .venv and install the project from pyproject.toml.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_LEVEL ?= WARNING

.PHONY: setup run test demo-inbox clean chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Copy the demo inbox (seeded simulated files + sample sheet + registry) and process it
# on Prefect's temporary local server; then print the per-patient timeline.
run: setup
	mkdir -p data/inbox
	cp -R examples/demo_inbox/. data/inbox/
	$(BIN)/graftwatch run --inbox data/inbox --store data/store
	$(BIN)/graftwatch query "SELECT patient_id, sample_id, days_post_mst AS day, cycle, round(cd3_pct_lymph, 1) AS cd3, round(cd4_pct_lymph, 1) AS cd4, round(cd8_pct_lymph, 1) AS cd8, round(cd4_cd8_ratio, 2) AS cd4_cd8, round(th1_pct_cd4, 1) AS th1, round(th2_pct_cd4, 1) AS th2, round(th17_pct_cd4, 1) AS th17, round(treg_pct_cd4, 1) AS treg FROM immune_timeline WHERE patient_id IS NOT NULL ORDER BY patient_id, day" --store data/store
	$(BIN)/graftwatch query "SELECT patient_id, sample_id, days_post_mst AS day, cell_fraction, method, donor_id, round(donor_pct, 3) AS donor_pct, round(ci_low, 3) AS ci_low, round(ci_high, 3) AS ci_high, lod_pct, detected, status FROM chimerism_timeline ORDER BY patient_id, day, method" --store data/store

# Regenerate examples/demo_inbox from the seeded simulators (only when they change).
demo-inbox: setup
	$(BIN)/python examples/build_demo.py examples/demo_inbox

# The report test opens the HTML in headless Chromium (Debian's package), installed when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: setup chromium
	$(BIN)/python -m pytest -q

clean:
	rm -rf data .pytest_cache
