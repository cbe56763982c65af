"""seqkern: fused recurrent and max-pool kernels for PyTorch with drop-in torch.nn layers."""
from . import ops
from . import functional
from . import nn
from ._backend import BackendUnavailableError, backend_for
from .convert import convert

__version__ = "0.1.0"


def empty_cpu_cache() -> None:
    """Return to the system the freed buffers that the CPU kernels keep for reuse.

    The CPU kernels take their large buffers (128 KiB and up: a layer's output, workspace and
    gate gradients, a pool's output) from a cache of freed blocks, so that a training loop
    does not fault the same memory in on every step; at most 256 MiB of free blocks are
    kept. Like ``torch.cuda.empty_cache()``, this frees nothing that a tensor still uses."""
    from ._backend import load_cpp

    load_cpp()._empty_large_block_cache()


__all__ = ["convert", "empty_cpu_cache", "functional", "nn", "ops", "BackendUnavailableError", "backend_for",
           "__version__"]
