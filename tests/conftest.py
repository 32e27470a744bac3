"""Test set-up: Triton runs in its interpreter on machines without a GPU, so every Triton
kernel is exercised on every CI run. TRITON_INTERPRET must be set before any kernel is defined,
hence here, before fastrnn is imported."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The kernels' outputs and work buffers start as NaN, so a test sees any element a kernel
# forgot to write (production runs skip the fill; a test that compares the two sets it itself).
os.environ.setdefault("FASTRNN_CPU_POISON", "1")
os.environ.setdefault("FASTRNN_CUDA_POISON", "1")  # the same for the CUDA kernels (GPU runs)

# The suite runs tiny shapes, where thread start-up costs more than it saves (and oversubscribed
# cores make it far worse); tests of the multi-threaded paths set their own thread count.
torch.set_num_threads(int(os.environ.get("FASTRNN_TEST_THREADS", "1")))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run bench/device_check.sh on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_backend_choices():
    """backends.pick caches its choices; tests that patch availability must not see stale ones."""
    from fastrnn import backends
    backends.clear_cache()
    yield
    backends.clear_cache()
