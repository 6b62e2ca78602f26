# One-word entry points. `make serve` and `make test` install what they need first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip --disable-pip-version-check -q

.PHONY: install serve test test-all bench-micro proto clean

install:
	$(PIP) install -e '.[test,bench]'

serve: install
	$(PYTHON) -m switchboard serve

test: install
	$(PYTHON) -m pytest -q

proto:
	$(PYTHON) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. switchboard/proto/v1/client.proto switchboard/proto/v1/mesh.proto

bench-micro: install
	$(PYTHON) -m pytest bench/micro --benchmark-only -q

clean:
	rm -rf build *.egg-info switchboard/core/_native/*.c switchboard/core/_native/*.so
