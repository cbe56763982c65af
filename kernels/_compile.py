"""Compile shipped Triton kernels for real GPU targets on a machine without a GPU, and read
back what each compiled kernel uses (registers, spills, shared memory).

Convention (read by tests/test_triton_compile.py): a module ``seqkern.kernels.<family>``
whose kernels must compile for the GPU targets defines ``COMPILE_CONFIGURATIONS``: a list,
or a function without arguments returning one. Each entry is one launch configuration
that the module's launchers can pick, either a ``CompileConfiguration`` or a dict with
the keys
  name        label for the resource table
  fn          the @triton.jit kernel
  signature   {argument: Triton type}: "*fp16" pointer, "i32" scalar, "constexpr"
  constexprs  {argument: value} for every constexpr argument
  num_warps   warps per program
  and optionally num_stages (default 2), maxnreg (default None: ptxas chooses) and
  aligned (arguments the launcher guarantees to be multiples of 16 / 16-byte aligned:
  Triton's JIT specializes on that, and it decides whether loads are vectorized).
``pointer`` / ``scalar`` build the type strings. The test compiles every entry for every
target in ``TARGETS`` (in a child process: ``python -m seqkern.kernels._compile``) and
requires zero spills and shared memory within the target's limit.
"""
from __future__ import annotations

import contextlib
import os
import io
import re
from typing import Any, Dict, NamedTuple, Optional, Tuple

import torch
import triton
from triton import knobs
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
    maxnreg: Optional[int] = None
    # Arguments that Triton's JIT will see as multiples of 16 (pointers: 16-byte aligned)
    # at every launch, as it specializes them. List only what the launcher guarantees.
    aligned: Tuple[str, ...] = ()


class Resources(NamedTuple):
    registers: int      # per thread
    spill_bytes: int    # register spill stores per thread, as ptxas reports them
    stack_bytes: int    # stack frame per thread (where spills go)
    shared_bytes: int   # dynamic shared memory per block


def _parse_ptxas_log(log: str, name: str) -> Dict[str, int]:
    """Numbers ptxas -v printed for kernel ``name``."""
    section = log[log.index(f"Function properties for {name}"):]
    stack, spill_stores = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores", section).groups()
    registers = re.search(r"Used (\d+) registers", section).group(1)
    return {"registers": int(registers), "spill": int(spill_stores), "stack": int(stack)}


def compile_for(configuration: CompileConfiguration, capability: int) -> Resources:
    """Compile ``configuration`` for sm_<capability> and report its resources, from the
    ptxas run that produced the cubin (a cached kernel would skip ptxas: always compile)."""
    names = configuration.kernel.arg_names
    attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in configuration.aligned}
    source = ASTSource(configuration.kernel, configuration.signature, configuration.constexprs, attrs)
    log = io.StringIO()
    with knobs.compilation.scope(), knobs.nvidia.scope(), contextlib.redirect_stdout(log):
        knobs.compilation.always_compile = True
        knobs.nvidia.dump_ptxas_log = True
        compiled = triton.compile(
            source, target=TARGETS[capability],
            options={"num_warps": configuration.num_warps, "num_stages": configuration.num_stages,
                     "maxnreg": configuration.maxnreg},
        )
    usage = _parse_ptxas_log(log.getvalue(), compiled.metadata.name)
    return Resources(usage["registers"], usage["spill"], usage["stack"], compiled.metadata.shared)


def _as_configuration(entry) -> CompileConfiguration:
    if isinstance(entry, CompileConfiguration):
        return entry
    return CompileConfiguration(
        kernel=entry["fn"], label=entry["name"], signature=entry["signature"], constexprs=entry["constexprs"],
        num_warps=entry["num_warps"], num_stages=entry.get("num_stages", 2), maxnreg=entry.get("maxnreg"),
        aligned=tuple(entry.get("aligned", ())),
    )


def collect_configurations():
    """(family, configuration) for every ``seqkern.kernels.<family>`` module that defines
    ``COMPILE_CONFIGURATIONS``."""
    import importlib
    import pkgutil

    import seqkern.kernels

    found = []
    for module_info in pkgutil.iter_modules(seqkern.kernels.__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"seqkern.kernels.{module_info.name}")
        listed = getattr(module, "COMPILE_CONFIGURATIONS", None)
        if listed is None:
            continue
        entries = listed() if callable(listed) else listed
        found.extend((module_info.name, _as_configuration(entry)) for entry in entries)
    return found


def _compile_job(job):
    index, capability = job
    family, configuration = collect_configurations()[index]
    resources = compile_for(configuration, capability)
    return {"family": family, "kernel": configuration.kernel.__name__, "label": configuration.label,
            "capability": capability, "signature": configuration.signature,
            "constexprs": configuration.constexprs, "num_warps": configuration.num_warps,
            "maxnreg": configuration.maxnreg, **resources._asdict()}


def main(argv=None):
    """``python -m seqkern.kernels._compile [--jobs N]``: compile every collected
    configuration for every target and print one JSON object per line. Must run with
    TRITON_INTERPRET unset: the interpreter replaces triton.jit functions at import."""
    import argparse
    import json
    import multiprocessing

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--jobs", type=int, default=1, help="compile in this many processes")
    arguments = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise SystemExit("seqkern.kernels._compile: unset TRITON_INTERPRET to compile for GPU targets")
    jobs = [(index, capability) for index in range(len(collect_configurations())) for capability in TARGETS]
    if arguments.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(arguments.jobs) as pool:
            results = pool.map(_compile_job, jobs)
    else:
        results = [_compile_job(job) for job in jobs]
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    # Run as the imported module, not __main__: the kernels modules build their entries
    # with seqkern.kernels._compile.CompileConfiguration, a class of that module.
    from seqkern.kernels._compile import main as _imported_main

    _imported_main()
