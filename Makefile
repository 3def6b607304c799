# Two commands for a fresh machine (Python >= 3.10 and nothing else):
#   make demo   run the main job (HCT vs a vanilla VAE on built-in synthetic data)
#   make test   run the test suite
# Both create ./.venv and install hcjax into it on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hcjax-installed

.PHONY: demo test install bench clean

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/hcjax train --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "hcjax needs Python >= 3.10; found " + sys.version.split()[0] + ". Set PYTHON=python3.x.")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,plot,data]"
	@touch $(STAMP)

clean:
	rm -rf $(VENV) runs
