# One-word entry points. Each creates the project's virtual environment (.venv) on first use and
# installs into it only what changed since the last run: `make serve` needs the server alone,
# `make test` adds the test and bench tools.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# A change to any of these needs a new install (dependencies or the Cython build).
BUILD_INPUTS := pyproject.toml setup.py $(wildcard switchboard/core/_native/*.pyx switchboard/core/_native/*.pxd)

.PHONY: install serve test bench-micro proto clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.installed-serve: $(PY) $(BUILD_INPUTS)
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: $(PY) $(BUILD_INPUTS)
	$(PIP) install -e '.[test,bench]'
	touch $@ $(VENV)/.installed-serve

install: $(VENV)/.installed-test

serve: $(VENV)/.installed-serve
	$(PY) -m switchboard serve

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

# grpcio-tools 1.85.1 bundles the protoc (35.1) the checked-in *_pb2.py files were made with.
proto: $(VENV)/.installed-test
	$(PIP) install 'grpcio-tools==1.85.1'
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. switchboard/proto/v1/client.proto switchboard/proto/v1/mesh.proto

bench-micro: $(VENV)/.installed-test
	$(PY) -m pytest bench/micro --benchmark-only -q

clean:
	rm -rf build *.egg-info switchboard/core/_native/*.c switchboard/core/_native/*.so $(VENV)
