"""Every shipped Triton kernel configuration compiles for the GPU targets (sm_80, sm_90)
with no register spills and shared memory within the target's limit. No GPU is needed:
``triton.compile`` with a ``GPUTarget`` runs the whole toolchain down to ptxas.

Convention: every module ``seqkern.kernels.<family>`` that defines
``COMPILE_CONFIGURATIONS`` (a list of ``seqkern.kernels._compile.CompileConfiguration``, or
a function without arguments returning one) is collected here; a new kernels module only
has to define it. The resource table (kernel, configuration, target, registers, spills,
shared memory) is printed; run with ``-s`` to see it.
"""
import importlib
import os
import pkgutil

import pytest

triton = pytest.importorskip("triton")

import seqkern.kernels  # noqa: E402
from seqkern.kernels._compile import SHARED_MEMORY_LIMIT, TARGETS, compile_for  # noqa: E402


def _configurations():
    found = []
    for module_info in pkgutil.iter_modules(seqkern.kernels.__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"seqkern.kernels.{module_info.name}")
        listed = getattr(module, "COMPILE_CONFIGURATIONS", None)
        if listed is None:
            continue
        for configuration in (listed() if callable(listed) else listed):
            found.append((module_info.name, configuration))
    return found


CONFIGURATIONS = _configurations()


def _compile_all():
    rows = []
    for family, configuration in CONFIGURATIONS:
        for capability in TARGETS:
            rows.append((family, configuration, capability, compile_for(configuration, capability)))
    return rows


@pytest.fixture(scope="module")
def compiled():
    if os.environ.get("TRITON_INTERPRET") == "1":
        # The interpreter replaces triton.jit functions; compiling needs the real ones.
        pytest.skip("GPU compilation needs TRITON_INTERPRET unset when seqkern.kernels is imported")
    rows = _compile_all()
    header = f"{'kernel':28s} {'configuration':78s} {'target':6s} {'regs':>4s} {'spill':>5s} {'smem':>7s}"
    lines = [header, "-" * len(header)]
    for family, configuration, capability, resources in rows:
        lines.append(
            f"{configuration.kernel.__name__:28s} {configuration.label:78s} sm_{capability:<3d} "
            f"{resources.registers:4d} {resources.spill_bytes:5d} {resources.shared_bytes:7d}"
        )
    print("\n" + "\n".join(lines))
    return rows


def test_every_kernels_module_lists_configurations():
    assert any(family == "recurrent" for family, _ in CONFIGURATIONS)


def test_no_spills_and_shared_memory_within_limits(compiled):
    failures = [
        f"{configuration.kernel.__name__} [{configuration.label}] sm_{capability}: "
        f"{resources.spill_bytes} bytes spilled, {resources.shared_bytes} bytes shared memory "
        f"(limit {SHARED_MEMORY_LIMIT[capability]})"
        for _, configuration, capability, resources in compiled
        if resources.spill_bytes > 0 or resources.shared_bytes > SHARED_MEMORY_LIMIT[capability]
    ]
    assert not failures, "\n".join(failures)
