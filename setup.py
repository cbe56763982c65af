"""Builds seqkern and its C++ CPU extension seqkern._C.

The Triton kernels live in kernels/ at the top of the checkout and are shipped as the
subpackage seqkern.kernels, so a wheel carries them.

SEQKERN_PORTABLE=1 builds without -march=native (for wheels run on other CPUs).
"""
import glob
import os

from setuptools import setup

sources = sorted(glob.glob("csrc/*.cpp"))
ext_modules = []
cmdclass = {}
if sources:
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    cxx_flags = ["-O3", "-fopenmp", "-std=c++17", "-fno-math-errno", "-fno-trapping-math"]
    if os.environ.get("SEQKERN_PORTABLE", "0") != "1":
        cxx_flags.append("-march=native")
    ext_modules.append(
        CppExtension(
            "seqkern._C",
            sources,
            include_dirs=[os.path.abspath("csrc")],
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
    )
    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=True)

setup(
    packages=["seqkern", "seqkern.ops", "seqkern.nn", "seqkern.kernels"],
    package_dir={"seqkern": "seqkern", "seqkern.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
