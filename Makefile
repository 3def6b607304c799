# Two commands for a fresh machine (Python >= 3.10 and nothing else):
#   make demo   run the main job (HCT vs vanilla, fixed-GMM and free-bits VAEs on built-in synthetic data)
#   make test   run the test suite
# Both create ./.venv and install hcjax into it on first use.
#   make docs   build the documentation site into site/ (strict: any warning fails)
#   make mutation   mutation-test the core maths and selection modules (mutmut; see tests/README.md)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hcjax-installed
DOCS_STAMP := $(VENV)/.hcjax-docs-installed
MUTATION_STAMP := $(VENV)/.hcjax-mutation-installed

.PHONY: demo test test-slow install docs bench clean mutation mutation-isolated mutation-report

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/hcjax train --out runs/demo

# the default suite (< 10 minutes on 2 cores); tests marked slow run with `make test-slow` (CI runs both).
# TEST_WORKERS pytest processes (pytest-xdist, one test file per process at a time): XLA compiles a program on
# one core, and a test spends most of its time compiling, so two processes keep both cores busy.
TEST_WORKERS ?= 2
TEST_ARGS := -q -n $(TEST_WORKERS) --dist loadfile
test: $(STAMP)
	$(BIN)/python -m pytest $(TEST_ARGS) -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest $(TEST_ARGS) -m slow

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

# Mutation testing (issue 16): mutmut mutates the modules listed in [tool.mutmut] (pyproject.toml); each mutant
# runs only the tests that call the mutated function. Results are cached in mutants/ (delete it for a fresh run).
# `make mutation`: mutmut generates the mutants and records which tests call which function (with a run of the
# first mutant of each function of theory/thresholds.py, whose tests are NumPy only), tests/mutation_in_process.py
# checks the rest in MUTATION_JOBS long-lived pytest processes (no fresh JAX import per mutant), and mutmut
# re-checks every survivor in a fresh process, so a survivor is always mutmut's own verdict.
# `make mutation-isolated`: mutmut alone, a fresh process per mutant. Either needs hours on 2 cores. MUTANTS
# restricts either to globs of mutant names, e.g. MUTANTS='hcjax.vae.elbo.*'. Summary: a per-file table on
# stdout, survivors in mutants/survivors.txt.
MUTATION_JOBS ?= 2
MUTANTS ?=
mutation: $(MUTATION_STAMP)
	$(BIN)/mutmut run --max-children $(MUTATION_JOBS) "hcjax.theory.thresholds.x_*__mutmut_1"
	$(BIN)/python tests/mutation_in_process.py --jobs $(MUTATION_JOBS) $(MUTANTS)
	@if [ -s mutants/in_process_survivors.txt ]; then \
		$(BIN)/mutmut run --max-children $(MUTATION_JOBS) $$(cat mutants/in_process_survivors.txt); fi
	@$(MAKE) --no-print-directory mutation-report

mutation-isolated: $(MUTATION_STAMP)
	$(BIN)/mutmut run --max-children $(MUTATION_JOBS) $(MUTANTS)
	@$(MAKE) --no-print-directory mutation-report

mutation-report:
	$(BIN)/mutmut export-cicd-stats
	$(BIN)/mutmut results > mutants/survivors.txt
	$(BIN)/python tests/mutation_in_process.py --report
	@cat mutants/mutmut-cicd-stats.json; echo; echo "mutation: survivors and unchecked mutants in mutants/survivors.txt"

$(MUTATION_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[mutation]"
	@touch $(MUTATION_STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "hcjax needs Python >= 3.10; found " + sys.version.split()[0] + ". Set PYTHON=python3.x.")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,plot,data,log]"
	@touch $(STAMP)

clean:
	rm -rf $(VENV) runs site docs/api/generated docs/experiments
