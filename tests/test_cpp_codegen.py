"""The built CPU kernels' matrix tiles keep their sums in vector registers.

A tile (``seqkern::gemm::tile`` in csrc/recurrent_gemm.h) sums a block of c over k in
registers. How a compiler allocates them is fragile: GCC 12 once stored every sum of the
one-vector tiles to the stack on every k, which made an LSTM at B = 16, H = 80 10% slower
forward and 19% backward, with the same numbers. So this test reads the disassembly of the
built extension: in each tile's innermost loops that multiply, no vector register may be
stored to the stack. It is the CPU counterpart of the Triton spill check
(test_triton_compile.py), and, like it, times nothing.
"""
import platform
import re
import shutil
import subprocess

import pytest

from seqkern import _C

pytestmark = pytest.mark.skipif(
    platform.machine() != "x86_64" or shutil.which("objdump") is None,
    reason="reads x86-64 disassembly with binutils' objdump",
)

_FUNCTION = re.compile(r"^[0-9a-f]+ <(.*seqkern::gemm::tile<[^>]*>)")
_INSTRUCTION = re.compile(r"^\s+([0-9a-f]+):\s+(.*)$")
_BACKWARD_JUMP = re.compile(r"^j\w+\s+([0-9a-f]+)\b")
_MULTIPLY = re.compile(r"fmadd|mulp[sd]")
_STACK_STORE = re.compile(r"^v?mov\w*\s+%[xyz]mm\d+,[^,]*\(%r[sb]p\)")


def tile_functions(disassembly: str) -> dict:
    """{function name: [(address, instruction)]} for every tile instantiation."""
    functions, current = {}, None
    for line in disassembly.splitlines():
        header = _FUNCTION.match(line)
        if header:
            current = functions.setdefault(header.group(1), [])
            continue
        if not line.strip():
            current = None
            continue
        instruction = _INSTRUCTION.match(line)
        if current is not None and instruction:
            current.append((int(instruction.group(1), 16), instruction.group(2)))
    return functions


def inner_multiply_loops(instructions) -> list:
    """The instructions of each innermost loop (a backward jump's range that holds no other)
    that multiplies."""
    loops = []
    for address, text in instructions:
        jump = _BACKWARD_JUMP.match(text)
        if jump and int(jump.group(1), 16) < address:
            loops.append((int(jump.group(1), 16), address))
    bodies = []
    for first, last in loops:
        if any(first <= other_first and other_last < last for other_first, other_last in loops
               if (other_first, other_last) != (first, last)):
            continue
        body = [text for address, text in instructions if first <= address <= last]
        if any(_MULTIPLY.search(text) for text in body):
            bodies.append(body)
    return bodies


@pytest.fixture(scope="module")
def tiles():
    listing = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", _C.__file__],
                             capture_output=True, text=True, check=True, timeout=300).stdout
    return tile_functions(listing)


def test_every_tile_has_a_multiplying_loop(tiles):
    # Float and double tiles of 1 to 6 rows: dozens of instantiations in any build.
    assert len(tiles) >= 20, sorted(tiles)
    without = [name for name, instructions in tiles.items() if not inner_multiply_loops(instructions)]
    assert not without, without


def test_tiles_never_store_vectors_to_the_stack_inside_their_loops(tiles):
    failures = []
    for name, instructions in tiles.items():
        for body in inner_multiply_loops(instructions):
            stores = [text for text in body if _STACK_STORE.match(text)]
            if stores:
                failures.append(f"{name}: {len(stores)} stack stores per iteration, e.g. {stores[0]}")
    assert not failures, "\n".join(failures)
