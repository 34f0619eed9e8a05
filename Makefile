# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench chaos clean

$(PY):
	python3 -m venv $(VENV)

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,otel]'
	# Bytecode written once, whatever PYTHONDONTWRITEBYTECODE says: every run imports it.
	$(PY) -m compileall -q autonomous_pipeline workflows activities >/dev/null
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q

demo: $(STAMP)
	$(PY) examples/run_demo.py

bench: $(STAMP)
	$(PY) bench/parse.py

chaos: $(STAMP)
	$(PY) bench/chaos.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
