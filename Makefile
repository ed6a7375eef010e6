# sslkit: `make train` sets everything up and runs the default job; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sslkit-installed
FMNIST_DEB := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
ARGS ?=
INSTALL_GIB := 7

.PHONY: install data train test test-all bench bench-gpu smoke clean

install: $(STAMP)

# reinstall only when the dependencies change. A first install needs ~6.5 GiB at its peak (torch
# 2.14.1 from PyPI is a CUDA build): the first line says so up front instead of pip failing
# half-way with "No space left on device"
$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -c 'import shutil, sys; free = shutil.disk_usage(".").free / 2**30; \
		free >= $(INSTALL_GIB) or sys.exit(f"make install: only {free:.1f} GiB free on this disk, a first install into .venv needs $(INSTALL_GIB) GiB (torch is a CUDA build); free some space and rerun")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	# the robust extra without its stale requests pin (see pyproject.toml)
	$(BIN)/pip install --no-deps 'torchattacks>=3.5.1'
	touch $(STAMP)

# Fashion-MNIST: Debian's package when apt can install it; otherwise train.py lets torchvision
# download it (data.download=true) into ./data
data:
	@if [ -f $(FMNIST_DEB) ] || ls data/FashionMNIST/raw/train-images-idx3-ubyte* >/dev/null 2>&1; then \
		echo "Fashion-MNIST: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist || echo "apt-get failed; torchvision will download Fashion-MNIST"; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist || echo "apt-get failed; torchvision will download Fashion-MNIST"; \
	else \
		echo "apt not usable: torchvision will download Fashion-MNIST into ./data"; \
	fi

train: install data
	$(BIN)/python train.py $(ARGS)

smoke: install
	$(BIN)/python train.py experiment=smoke $(ARGS)

# the default run leaves out the tests marked slow, each of which has a fast twin in it
# (docs/testing.md); test-all runs everything. Both print the 15 slowest tests at the end
# 2 workers (pytest-xdist), a test module's tests on one worker so its trained fixtures are
# built once; TEST_WORKERS=0 runs in this process
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope)

test: install
	$(BIN)/python -m pytest -q -m "not slow" $(XDIST) --durations=15 $(ARGS)

test-all: install
	$(BIN)/python -m pytest -q $(XDIST) --durations=15 $(ARGS)

bench: install
	$(BIN)/python scripts/bench.py $(ARGS)

# ResNet-18 SimCLR on one GPU: sslkit + Lightning vs a plain loop, with and without torch.compile
bench-gpu: install
	$(BIN)/python scripts/bench_gpu.py $(ARGS)

clean:
	rm -rf runs multirun outputs .pytest_cache
