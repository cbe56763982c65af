"""Every shipped Triton kernel configuration compiles for the GPU targets (sm_80, sm_90)
with no register spills and shared memory within the target's limit (163 KB / 227 KB of
dynamic shared memory per block). No GPU is needed: ``triton.compile`` with a
``GPUTarget`` runs the whole toolchain down to ptxas, whose report gives the numbers.

Convention: every module ``seqkern.kernels.<family>`` that defines
``COMPILE_CONFIGURATIONS`` (a list of ``seqkern.kernels._compile.CompileConfiguration``, or
a function without arguments returning one) is compiled here; a new kernels module only
has to define it (see ``kernels/_compile.py``). The compilation runs in a child process
(``python -m seqkern.kernels._compile``) because the test session imports seqkern under
the Triton interpreter, which replaces ``triton.jit`` functions. The resource table is
printed; run pytest with ``-s`` to see it.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

from seqkern.kernels import recurrent  # noqa: E402
from seqkern.kernels._compile import SHARED_MEMORY_LIMIT, TARGETS  # noqa: E402


@pytest.fixture(scope="module")
def compiled():
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    jobs = str(min(2, os.cpu_count() or 1))
    finished = subprocess.run(
        [sys.executable, "-m", "seqkern.kernels._compile", "--jobs", jobs],
        env=environment, capture_output=True, text=True, timeout=900,
    )
    assert finished.returncode == 0, finished.stderr[-5000:]
    rows = [json.loads(line) for line in finished.stdout.splitlines() if line.startswith("{")]
    header = f"{'kernel':26s} {'configuration':82s} {'target':6s} {'regs':>4s} {'spill':>5s} {'smem':>7s}"
    table = [header, "-" * len(header)] + [
        f"{row['kernel']:26s} {row['label']:82s} sm_{row['capability']:<3d} {row['registers']:4d} "
        f"{row['spill_bytes']:5d} {row['shared_bytes']:7d}"
        for row in rows
    ]
    print("\n" + "\n".join(table))
    return rows


def test_every_configuration_compiles_for_every_target(compiled):
    by_configuration = {}
    for row in compiled:
        by_configuration.setdefault((row["family"], row["label"]), set()).add(row["capability"])
    assert any(family == "recurrent" for family, _ in by_configuration)
    assert all(targets == set(TARGETS) for targets in by_configuration.values())


def test_no_spills_and_shared_memory_within_limits(compiled):
    failures = [
        f"{row['kernel']} [{row['label']}] sm_{row['capability']}: {row['spill_bytes']} bytes spilled, "
        f"{row['shared_bytes']} bytes of shared memory (limit {SHARED_MEMORY_LIMIT[row['capability']]})"
        for row in compiled
        if row["spill_bytes"] > 0 or row["shared_bytes"] > SHARED_MEMORY_LIMIT[row["capability"]]
    ]
    assert not failures, "\n".join(failures)


def _launch(kernel, config, dtype):
    return (kernel, config.block_b, config.block_n, config.block_k, config.num_warps, config.maxnreg,
            "*fp32" if dtype == torch.float32 else "16-bit")


@pytest.mark.parametrize("dtype", recurrent.SUPPORTED_DTYPES, ids=str)
def test_compiled_set_covers_every_recurrent_launch_configuration(compiled, dtype):
    """What the launchers can pick, per dtype: the persistent config for every H they
    take and the step config on both sides of its width switch."""
    shipped = {
        (row["kernel"], row["constexprs"]["BLOCK_B"], row["constexprs"]["BLOCK_N"], row["constexprs"]["BLOCK_K"],
         row["num_warps"], row["maxnreg"], "*fp32" if row["signature"]["w_hh"] == "*fp32" else "16-bit")
        for row in compiled if row["family"] == "recurrent"
    }
    wanted = set()
    for hidden in (1, 16, 17, 64, 100, 256):
        assert hidden <= recurrent.MAX_PERSISTENT_HIDDEN[dtype]
        config = recurrent.persistent_config(hidden, dtype)
        wanted.add(_launch("_sequence_forward_kernel", config, dtype))
        wanted.add(_launch("_sequence_backward_kernel", config, dtype))
    for columns in (1, 256, 257, 4096):
        config = recurrent.step_config(columns, dtype)
        wanted.add(_launch("_step_forward_kernel", config, dtype))
        wanted.add(_launch("_step_backward_kernel", config, dtype))
    assert wanted <= shipped, sorted(wanted - shipped)
