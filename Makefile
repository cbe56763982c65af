# `make test` and `make bench` bootstrap .venv when it is missing, install the pinned
# dependencies, build the C++ extension, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
# Kept in build/, beside what it records: removing the build (make clean, git clean) also
# removes the stamp, so the next run reinstalls the extension rather than finding it gone.
STAMP := build/.seqkern-installed

.PHONY: test bench install clean

$(PY):
	@if $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
		echo "using the torch already importable by $(PYTHON)"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi

$(STAMP): $(PY) requirements.txt pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h)
	@$(PY) -c "import torch" >/dev/null 2>&1 || $(PY) -m pip install $(TORCH_PIP_ARGS) torch==$(TORCH_VERSION)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-build-isolation -e .[test]
	@mkdir -p $(dir $(STAMP)) && touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench.report $(ARGS)

clean:
	rm -rf build dist *.egg-info seqkern/*.so
