"""Test session setup. The Triton interpreter is read when a kernel is defined, so it is
switched on here, before seqkern is imported, whenever no CUDA device is present."""
import os

if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
