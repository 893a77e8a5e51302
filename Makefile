# The two README commands: `make demo` (smoke profile end to end) and `make test`.
PY      := .venv/bin/python
PIP     := $(PY) -m pip
PROFILE ?= params/smoke.yaml
# Optional index for the torch wheel (e.g. PyTorch's CPU index on a machine that only sees PyPI).
TORCH_INDEX ?=

.PHONY: setup demo test test-lib test-nb notebooks bench clean

# .venv is created once; the stamp file re-installs when the package's dependencies change.
.venv/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[notebooks,test]'
	touch $@

setup: .venv/.installed

demo: setup
	$(PY) -m facelift_lib run $(PROFILE)

test: setup
	$(PY) -m pytest tests -q
	$(PY) -m pytest --nbval-lax notebooks/*.ipynb --sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider -q

test-lib: setup
	$(PY) -m pytest tests -q

test-nb: setup
	$(PY) -m pytest --nbval-lax notebooks/*.ipynb --sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider -q

# Re-execute the paired notebooks in place with their (smoke) defaults: the committed outputs are
# the reference nbval compares against.
notebooks: setup
	$(PY) -m facelift_lib notebooks

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b; done

clean:
	rm -rf outputs/smoke outputs/full
