# `make run`: fresh machine -> environment, embedded PostgreSQL, whole asset graph on sample data, summary.
# `make test`: the whole test suite against a real PostgreSQL, dbt and Dagster.
# `make test-unit`: the pure-code tests only (tests/unit: no database, no dbt, no Dagster run).
# `make lint`: ruff over the Python code (configuration in pyproject.toml).
# `make lock`: regenerates requirements.lock from pyproject.toml after a pin there changed (versions the lock
# already has stay unless pyproject.toml moves them), i.e.
#   uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 --find-links /opt/wheels -o requirements.lock
#
# The venv installs requirements.lock: every transitive version, with hashes, so two machines get the same
# set. uv (UV_VERSION, put in the venv by pip) installs it; pip installs the same lock where uv fails.
# torch is the CPU wheel on the machines' disk (WHEELS; torch==2.13.0+cpu in the lock): without that folder
# the lock can't be met, and pip resolves pyproject.toml, unlocked, as it did before the lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# The k8s extra (dagster-k8s) and s3fs, locked beside it by deploy/lock-k8s.sh: the image installs both, and
# so does the venv, so the test of the Kubernetes step tags runs here too.
K8S_LOCK := deploy/requirements-k8s.lock
UV_VERSION := 0.13.9
WHEELS := /opt/wheels
CHROMIUM := /usr/bin/chromium
CHROMIUM_FAILED := $(VENV)/.chromium-install-failed
MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := $(shell find dbt_project/models dbt_project/macros dbt_project/tests -type f 2>/dev/null) \
               dbt_project/dbt_project.yml dbt_project/profiles.yml

.PHONY: run test test-unit lint dev env manifest db-stop clean lock browser

# The venv is made without pip (ensurepip takes ~9 s; the lock brings pip), then gets uv: from $(PYTHON)'s
# pip (`--python`), or from its own pip where that fails. Shell fragments for the recipes below.
VENV_MAKE = test -x $(BIN)/python || $(PYTHON) -m venv --without-pip $(VENV)
PIP_ENSURE = { $(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --default-pip >/dev/null; }
UV_INSTALL = [ "$$($(BIN)/uv --version 2>/dev/null | cut -d' ' -f2)" = $(UV_VERSION) ] \
	|| $(PYTHON) -m pip --python $(BIN)/python install --quiet uv==$(UV_VERSION) \
	|| { $(PIP_ENSURE) && $(BIN)/python -m pip install --quiet uv==$(UV_VERSION); }

# The venv is made when missing and brought to the lock when pyproject.toml or the lock changed since.
# The lock is installed as it stands (--no-deps: it has every dependency; uv then needn't resolve first,
# which would build lightfm-next's sdist for its metadata before anything else, and pip in hash-checking
# mode would reject dagster-dbt's `sqlglot[rs]` as unpinned), the project itself editable without
# dependencies. `uv pip check` (pip's where uv fails) then catches a lock that no longer meets pyproject.toml.
$(STAMP): pyproject.toml $(LOCK) $(K8S_LOCK)
	@$(VENV_MAKE)
	@if [ ! -d $(WHEELS) ]; then \
	  echo "env: no $(WHEELS) (the torch CPU wheel the lock names): pip resolves pyproject.toml, unlocked"; \
	  $(PIP_ENSURE) && $(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel \
	    && $(BIN)/python -m pip install --quiet -e '.[dev,k8s]'; \
	elif { $(UV_INSTALL); } && $(BIN)/uv pip install --quiet --python $(BIN)/python --find-links $(WHEELS) \
	    --require-hashes --no-deps -r $(LOCK) -r $(K8S_LOCK) \
	  && $(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .; then \
	  echo "env: installed $(LOCK) with uv $(UV_VERSION)"; \
	else \
	  echo "env: uv could not install $(LOCK) (see above): installing it with pip instead"; \
	  $(PIP_ENSURE) && $(BIN)/python -m pip install --quiet --find-links $(WHEELS) --require-hashes --no-deps -r $(LOCK) -r $(K8S_LOCK) \
	    && $(BIN)/python -m pip install --quiet --no-deps -e .; \
	fi
	@{ $(BIN)/uv pip check --quiet --python $(BIN)/python 2>/dev/null || $(BIN)/python -m pip check; } >/dev/null \
	  || { $(BIN)/python -m pip check; echo "env: the venv does not meet pyproject.toml: run make lock"; exit 1; }
	@touch $(STAMP)

env: $(STAMP)

lock:
	@test -d $(WHEELS) || { echo "lock: $(WHEELS) is missing: the lock would take a CUDA torch from PyPI"; exit 1; }
	@$(VENV_MAKE)
	@$(UV_INSTALL)
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
	  --find-links $(WHEELS) --custom-compile-command 'make lock' --quiet -o $(LOCK)
	UV=$(BIN)/uv deploy/lock-k8s.sh

# The browser test drives Debian's chromium through Playwright. Installed here where this is root with
# apt-get, once: the binary, or the record of a failed try, stops a second try. Never fails the target.
browser: $(STAMP)
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ -f $(CHROMIUM_FAILED) ]; then \
	  echo "browser: no $(CHROMIUM), apt-get failed before ($(CHROMIUM_FAILED); remove it to retry): the browser test will skip"; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: no $(CHROMIUM) and no apt-get as root to install it: the browser test will skip"; \
	else \
	  echo "browser: installing Debian's chromium (apt-get) for the browser test"; \
	  timeout 900 sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 chromium' \
	    >$(CHROMIUM_FAILED) 2>&1; status=$$?; \
	  if [ -x $(CHROMIUM) ]; then rm -f $(CHROMIUM_FAILED); \
	  else \
	    why=$$(grep -E '^(E|W|Err):' $(CHROMIUM_FAILED) | tail -n1); \
	    [ $$status = 0 ] && why="apt-get succeeded but left no $(CHROMIUM)"; \
	    [ $$status = 124 ] && why="timed out after 900 s"; \
	    echo "browser: apt-get install chromium failed (exit $$status: $${why:-see $(CHROMIUM_FAILED)}): the browser test will skip"; \
	  fi; \
	fi

$(MANIFEST): $(STAMP) $(DBT_SOURCES)
	$(BIN)/rec dbt-parse
	@touch $(MANIFEST)

manifest: $(MANIFEST)

run: $(MANIFEST)
	$(BIN)/rec run

test: $(MANIFEST) browser
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
