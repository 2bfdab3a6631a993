# scene3d: the two commands of the README.
#   make demo   set everything up, then generate a scene, train s3d-nerf-tiny on CPU, evaluate, export
#   make test   set everything up, then run the whole test suite (CPU, offline)
# Both create .venv, install scene3d with its dependencies, and install the Debian packages it needs when run as
# root (otherwise they print the exact apt-get line and stop).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.scene3d-installed
# open3d (synthetic scenes, mesh export) needs libusb; the browser tests drive Debian's Chromium; ns-render needs
# ffmpeg on the PATH.
APT_PACKAGES := libusb-1.0-0 chromium ffmpeg
# Offline, and OpenMP threads that wait passively: spinning waiters stall torch 10x and more as soon as another
# process or thread holds one of the two cores (training beside the viewer's render thread, say).
ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE

.PHONY: demo test setup system-deps clean

demo: setup
	$(ENV) $(VENV)/bin/s3d demo

test: setup
	$(ENV) SCENE3D_STRICT=1 $(PY) -m pytest -q $(PYTEST_ARGS)

setup: system-deps $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = "0" ]; then \
			echo "Installing Debian packages:$$missing"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing \
			|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; }; \
		else \
			echo "scene3d needs Debian packages that are not installed. Run:"; \
			echo "  sudo apt-get update && sudo apt-get install -y$$missing"; \
			exit 1; \
		fi; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -e ".[dev]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
