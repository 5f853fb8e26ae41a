# The README's two commands: `make run` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU wheel where one is provided locally; a torch already in the venv (e.g. a CUDA build) is kept.
TORCH_SPEC ?= torch==2.13.0
PROFILE ?= demo
MODALITY ?= all
export GEN_ASSETS_HOME ?= $(CURDIR)/data

.PHONY: install run test ui serve browser screenshots bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "keeping the installed torch $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	else \
		$(BIN)/python -m pip install -q "$(TORCH_SPEC)"; \
	fi
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

run: install
	$(BIN)/gen-assets run --profile $(PROFILE) --modality $(MODALITY)

test: install browser
	$(BIN)/python -m pytest

serve: install
	$(BIN)/gen-assets serve

# Debian's Chromium for gen_assets_tests/web/test_browser.py (skipped, with the reason, where it is absent)
browser:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && \
		(apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
		|| echo "no Chromium at /usr/bin/chromium (apt-get needs root and a mirror): the browser test will be skipped"; }

# the README's screenshots of the review page and of the Dagster UI's asset graph, taken by the browser tests
screenshots: install browser
	GEN_ASSETS_SCREENSHOTS=1 $(BIN)/python -m pytest -q gen_assets_tests/web/test_browser.py gen_assets_tests/web/test_asset_graph.py

ui: install
	$(BIN)/gen-assets ui

bench: install
	$(BIN)/python benchmarks/lightning_vs_torch.py
	$(BIN)/python benchmarks/cleaning_duckdb_vs_pandas.py
	$(BIN)/python benchmarks/lora_finetune.py
	$(BIN)/python benchmarks/text_generation.py
	$(BIN)/python benchmarks/preference_suite.py

clean:
	rm -rf $(VENV) build *.egg-info
