# `make demo` sets everything up and runs the end-to-end demo; `make test` runs the tests.
PY ?= python3
STAMPS := .build

.PHONY: install demo test test-fast mutate docs clean

install: $(STAMPS)/galhpc

$(STAMPS)/deps: scripts/setup.sh requirements.txt
	bash scripts/setup.sh
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/galhpc: $(STAMPS)/deps pyproject.toml setup.py $(wildcard cpp_ext/*)
	$(PY) -m pip install --disable-pip-version-check -q --no-build-isolation -e .
	@touch $@

demo: install
	bash scripts/demo.sh

test: install
	$(PY) -m pytest -m "slow or not slow" --durations=20

docs: install
	$(PY) -m sphinx -W -q -b html docs build/docs

test-fast: install
	$(PY) -m pytest

# plants realistic bugs one at a time in a temporary copy and runs the tests that should catch each
mutate: install
	$(PY) scripts/mutate.py $(MUTATE_ARGS)

clean:
	rm -rf $(STAMPS) build *.egg-info galhpc/_ext*.so demo-output
