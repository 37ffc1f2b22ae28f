# The two commands of the README: `make demo` and `make test`. Each creates or reuses ./.venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow venv clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,export,napari,fast]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/unetseg demo --out demo-out

# Under Xvfb (tools/headless.sh installs it when missing): the napari plugin's viewer tests need a display.
# Two worker processes (pytest-xdist) share the CPU; then the tests marked serial (they kill
# processes and watch them recover) run alone, so no other test's load changes their timing.
test: $(STAMP)
	tools/headless.sh $(PY) -m pytest -q -n 2 -m "not slow and not serial" src tests
	tools/headless.sh $(PY) -m pytest -q -m "serial and not slow" tests

# The slow tests check outputs against real ImageJ (Debian's imagej, run under Xvfb): installed
# here when missing and apt-get is allowed; without it that test skips with a message.
test-slow: $(STAMP)
	@command -v imagej >/dev/null && command -v xvfb-run >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends imagej xvfb xauth >/dev/null) || \
		echo "imagej/xvfb not installed: the ImageJ test will skip"
	tools/headless.sh $(PY) -m pytest -q -m slow tests || [ $$? -eq 5 ]  # 5: no slow test selected

clean:
	rm -rf $(VENV) demo-out .pytest_cache
