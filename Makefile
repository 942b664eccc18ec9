# Quick start: `make demo` and `make test` work on a fresh machine (they set everything up).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
XVFB := xvfb-run -a -s "-screen 0 1280x1024x24"
DEBIAN_PACKAGES := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 \
	libxcb-render-util0 libxcb-shape0 libxkbcommon-x11-0 libgl1 libegl1 libfontconfig1 libdbus-1-3

.PHONY: demo test test-fast lint setup system-deps clean benchmarks

$(STAMP): setup.cfg pyproject.toml constraints.txt tests/oracles.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[testing]"
	# reference packages used only as test oracles, without their dependency trees
	$(PIP) install -q -c constraints.txt --no-deps -r tests/oracles.txt
	touch $(STAMP)

setup: $(STAMP)

# Debian packages for napari under a virtual X server (GUI tests, screenshots).
system-deps:
	@if ! command -v xvfb-run >/dev/null 2>&1 || ! dpkg -s libxcb-icccm4 >/dev/null 2>&1; then \
		echo "installing Debian packages for the virtual display: $(DEBIAN_PACKAGES)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(DEBIAN_PACKAGES) >/dev/null; \
	fi

demo: $(STAMP)
	$(VENV)/bin/napari-sam automask sample_data/nuclei_stack.tif sample_data/nuclei.tif \
		-o demo_output --format tif,coco,csv --overlay --overwrite --tiling-above 300
	@echo "demo outputs written to demo_output/"

# ruff's rules: [tool.ruff.lint] in pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check napari_sam tests benchmarks

test: $(STAMP) system-deps lint
	$(XVFB) $(PY) -m pytest -q -p no:cacheprovider

test-fast: $(STAMP) lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider -m "not slow and not gui"

benchmarks: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo_output build *.egg-info
