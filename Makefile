# `make run`: fresh machine -> environment, embedded PostgreSQL, whole asset graph on sample data, summary.
# `make test`: the whole test suite against a real PostgreSQL, dbt and Dagster.
# `make test-unit`: the pure-code tests only (tests/unit: no database, no dbt, no Dagster run).
# `make lint`: ruff over the Python code (configuration in pyproject.toml).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := $(shell find dbt_project/models dbt_project/macros dbt_project/tests -type f 2>/dev/null) \
               dbt_project/dbt_project.yml dbt_project/profiles.yml

.PHONY: run test test-unit lint dev env manifest db-stop clean

# The venv is rebuilt from nothing when missing or when pyproject.toml changed since it was made.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

env: $(STAMP)

$(MANIFEST): $(STAMP) $(DBT_SOURCES)
	$(BIN)/rec dbt-parse
	@touch $(MANIFEST)

manifest: $(MANIFEST)

run: $(MANIFEST)
	$(BIN)/rec run

test: $(MANIFEST)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check rec_orchestration tests bench

dev: $(MANIFEST)
	$(BIN)/rec db start
	$(BIN)/rec dev

db-stop: $(STAMP)
	$(BIN)/rec db stop

clean:
	-test -x $(BIN)/rec && $(BIN)/rec db stop
	rm -rf $(VENV) dbt_project/target dbt_project/logs .pytest_cache
