# Two commands for a fresh machine (Python >= 3.10 and nothing else):
#   make demo   run the main job (HCT vs a vanilla VAE on built-in synthetic data)
#   make test   run the test suite
# Both create ./.venv and install hcjax into it on first use.
#   make docs   build the documentation site into site/ (strict: any warning fails)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hcjax-installed
DOCS_STAMP := $(VENV)/.hcjax-docs-installed

.PHONY: demo test install docs bench clean

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/hcjax train --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

install: $(STAMP)

# Sphinx + MyST + autodoc, warnings as errors (-W), every hcjax reference checked (-n); the build also fails
# on a public name without a docstring (docs/_ext/hcjax_docs.py). Output: site/index.html.
docs: $(DOCS_STAMP)
	rm -rf site
	$(BIN)/python -m sphinx -W --keep-going -n -q -b html docs site
	@echo "docs: site/index.html"

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	@touch $(DOCS_STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "hcjax needs Python >= 3.10; found " + sys.version.split()[0] + ". Set PYTHON=python3.x.")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,plot,data,log]"
	@touch $(STAMP)

clean:
	rm -rf $(VENV) runs site docs/api/generated docs/experiments
