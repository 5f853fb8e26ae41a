# The README's two commands: `make run` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU wheel where one is provided locally; a torch already in the venv (e.g. a CUDA build) is kept.
TORCH_SPEC ?= torch==2.13.0
PROFILE ?= demo
MODALITY ?= all
export GEN_ASSETS_HOME ?= $(CURDIR)/data

.PHONY: install run test ui bench clean

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

test: install
	$(BIN)/python -m pytest

ui: install
	$(BIN)/gen-assets ui

bench: install
	$(BIN)/python benchmarks/lightning_vs_torch.py
	$(BIN)/python benchmarks/cleaning_duckdb_vs_pandas.py

clean:
	rm -rf $(VENV) build *.egg-info
