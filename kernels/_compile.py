"""Compile shipped Triton kernels for real GPU targets on a machine without a GPU, and read
back what each compiled kernel uses (registers, spills, shared memory).

Convention (read by tests/test_triton_compile.py): a module ``seqkern.kernels.<family>``
whose kernels must compile for the GPU targets defines ``COMPILE_CONFIGURATIONS``, a list
of ``CompileConfiguration`` (or a function without arguments returning one). Each entry
is one launch configuration that the module's launchers can pick: the kernel, a short
label for the resource table, its argument types, its constexpr values and its launch
options. ``pointer`` / ``scalar`` build the type strings. The test compiles every entry for
every target in ``TARGETS`` and requires zero spills and shared memory within the target's
limit.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from typing import Any, Dict, NamedTuple

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

# Compute capability -> dynamic shared memory a block may use (bytes): 163 KB on A100
# (sm_80), 227 KB on H100 (sm_90).
TARGETS = {80: GPUTarget("cuda", 80, 32), 90: GPUTarget("cuda", 90, 32)}
SHARED_MEMORY_LIMIT = {80: 163 * 1024, 90: 227 * 1024}

_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int64: "i64",
                 torch.int32: "i32"}


def pointer(dtype: torch.dtype) -> str:
    """Triton signature type of a pointer to ``dtype`` elements."""
    return "*" + _TRITON_TYPES[dtype]


def scalar(dtype: torch.dtype = torch.int32) -> str:
    return _TRITON_TYPES[dtype]


class CompileConfiguration(NamedTuple):
    kernel: Any                 # a @triton.jit function
    label: str                  # what distinguishes this entry in the resource table
    signature: Dict[str, str]   # every non-constexpr argument -> Triton type ("*fp16", "i32")
    constexprs: Dict[str, Any]  # every constexpr argument -> value
    num_warps: int
    num_stages: int = 2


class Resources(NamedTuple):
    registers: int      # per thread
    spill_bytes: int    # local memory per thread: register spills (Triton kernels have no local arrays)
    stack_bytes: int
    shared_bytes: int   # dynamic shared memory per block


def _ptxas_tool_directory() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def _cubin_resources(cubin: bytes, name: str) -> Dict[str, int]:
    """REG / STACK / LOCAL of kernel ``name`` from ``cuobjdump --dump-resource-usage``
    (the cuobjdump bundled with Triton)."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "kernel.cubin")
        with open(path, "wb") as handle:
            handle.write(cubin)
        report = subprocess.run(
            [os.path.join(_ptxas_tool_directory(), "cuobjdump"), "--dump-resource-usage", path],
            check=True, capture_output=True, text=True,
        ).stdout
    match = re.search(r"Function " + re.escape(name) + r":\s*\n\s*(.*)", report)
    if match is None:
        raise RuntimeError(f"cuobjdump reported no resources for kernel {name}:\n{report}")
    return {key: int(value) for key, value in re.findall(r"(\w+):(\d+)", match.group(1))}


def compile_for(configuration: CompileConfiguration, capability: int) -> Resources:
    """Compile ``configuration`` for sm_<capability> and report its resources."""
    source = ASTSource(configuration.kernel, configuration.signature, configuration.constexprs)
    compiled = triton.compile(
        source, target=TARGETS[capability],
        options={"num_warps": configuration.num_warps, "num_stages": configuration.num_stages},
    )
    usage = _cubin_resources(compiled.asm["cubin"], compiled.metadata.name)
    return Resources(usage["REG"], usage["LOCAL"], usage["STACK"], compiled.metadata.shared)
