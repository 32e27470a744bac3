"""Build fastrnn._C: C++ CPU kernels always, CUDA kernels when torch has CUDA and a toolkit exists.

FASTRNN_BUILD=auto (default) | cpu | cuda.  On GPU-less machines with a CUDA build of torch and
nvcc installed (our CI), `auto` still compiles and links the CUDA sources: a compile error must
never hide until a GPU shows up (shared/docs/TOOLCHAIN.md).
"""
import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _find_cuda_home():
    for cand in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if cand and os.path.exists(os.path.join(cand, "bin", "nvcc")):
            return cand
    return None


def _extensions():
    import torch
    from torch.utils import cpp_extension

    mode = os.environ.get("FASTRNN_BUILD", "auto").lower()
    if mode not in ("auto", "cpu", "cuda"):
        sys.exit(f"FASTRNN_BUILD must be auto, cpu or cuda, got {mode!r}")
    cuda_home = _find_cuda_home()
    with_cuda = torch.version.cuda is not None and cuda_home is not None
    if mode == "cuda" and not with_cuda:
        sys.exit("FASTRNN_BUILD=cuda but torch has no CUDA or no CUDA toolkit (nvcc) was found; "
                 "set CUDA_HOME or use FASTRNN_BUILD=auto")
    if mode == "cpu":
        with_cuda = False

    cpp = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    cu = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    include_dirs = [os.path.join(ROOT, "csrc")]
    cxx = ["-O3", "-fopenmp"]  # torch picks the C++ standard it needs (C++20 for 2.14)
    define_macros = []
    if with_cuda:
        os.environ["CUDA_HOME"] = cuda_home
        cpp_extension.CUDA_HOME = cuda_home
        # Without a GPU, torch cannot guess the arch and crashes; pick Hopper (our target).
        if not torch.cuda.is_available():
            os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
        # The pip-installed CUDA toolkit headers (cuBLAS etc.) that ATen/cuda headers pull in.
        for mod in ("nvidia.cu13", "nvidia"):
            try:
                pkg = __import__(mod, fromlist=["__path__"])
            except ImportError:
                continue
            for p in getattr(pkg, "__path__", []):
                inc = os.path.join(p, "include")
                if os.path.isdir(inc):
                    include_dirs.append(inc)
        define_macros.append(("FASTRNN_WITH_CUDA", "1"))
        # No --use_fast_math: it turns tanhf into tanh.approx.f32 (about 2^-11 relative error), the
        # likely cause of the two fp32 additive-attention tests that failed on an H100 (2026-11-26);
        # the kernels call __expf themselves where an approximate exp is fine.
        nvcc = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]
        if os.environ.get("FASTRNN_PTXAS_VERBOSE"):
            nvcc.append("-Xptxas=-v")
        ext = cpp_extension.CUDAExtension(
            "fastrnn._C", cpp + cu, include_dirs=include_dirs, define_macros=define_macros,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=["-fopenmp"])
    else:
        ext = cpp_extension.CppExtension(
            "fastrnn._C", cpp, include_dirs=include_dirs, define_macros=define_macros,
            extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    return [ext], cpp_extension.BuildExtension.with_options(use_ninja=True)


ext_modules, build_ext = _extensions()

setup(
    name="fastrnn",
    version="0.1.0",
    description="Fused LSTM/GRU and attention kernels for PyTorch (CUDA, Triton, C++ CPU)",
    packages=find_packages(include=["fastrnn", "fastrnn.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "tqdm"],
    extras_require={"triton": ["triton"], "bench": ["matplotlib", "pytest-benchmark"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext},
    zip_safe=False,
)
