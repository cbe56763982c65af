"""seqkern: fused recurrent and max-pool kernels for PyTorch with drop-in torch.nn layers."""
from . import ops
from . import functional
from . import nn
from ._backend import BackendUnavailableError, backend_for
from .convert import convert

__version__ = "0.1.0"

__all__ = ["convert", "functional", "nn", "ops", "BackendUnavailableError", "backend_for", "__version__"]
