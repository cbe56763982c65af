"""Shared test helpers: the one input generator and the one tolerance table.

Import as ``from support import ...`` (pytest puts tests/ on sys.path).
"""
import numpy as np
import torch

SEED = 20261121

# One tolerance table, per dtype: (rtol, atol) for comparing a backend with the float64
# NumPy reference or with torch.nn. float64 is "the same math, different summation order".
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (2e-5, 2e-6),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (5e-2, 1e-2),
}


def tolerance(dtype):
    return TOLERANCES[dtype]


def assert_close(actual, expected, dtype=None, msg=""):
    """Compare with the table's tolerance for ``dtype`` (default: actual's dtype)."""
    if isinstance(expected, np.ndarray):
        expected = torch.from_numpy(expected)
    if isinstance(actual, np.ndarray):
        actual = torch.from_numpy(actual)
    dtype = dtype or actual.dtype
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(
        actual.detach().cpu().double(), expected.detach().cpu().double(), rtol=rtol, atol=atol, msg=msg or None
    )


class Inputs:
    """Deterministic random tensors; every test draws from one of these."""

    def __init__(self, seed=SEED):
        self.generator = torch.Generator().manual_seed(seed)

    def randn(self, *shape, dtype=torch.float64, scale=1.0, requires_grad=False):
        tensor = (torch.randn(*shape, generator=self.generator, dtype=torch.float64) * scale).to(dtype)
        return tensor.requires_grad_(requires_grad)

    def uniform(self, *shape, low=-1.0, high=1.0, dtype=torch.float64):
        tensor = torch.rand(*shape, generator=self.generator, dtype=torch.float64) * (high - low) + low
        return tensor.to(dtype)

    def lengths(self, batch, steps):
        """Uneven lengths in [1, steps], with at least one full-length sequence."""
        lengths = torch.randint(1, steps + 1, (batch,), generator=self.generator)
        lengths[torch.randint(0, batch, (1,), generator=self.generator)] = steps
        return lengths


def inputs(seed=SEED):
    return Inputs(seed)


# Layer variants the recurrent tests cover. name: (cell, projection, peephole, bias)
RECURRENT_VARIANTS = {
    "rnn_tanh": ("rnn_tanh", False, False, True),
    "rnn_relu": ("rnn_relu", False, False, True),
    "rnn_tanh_no_bias": ("rnn_tanh", False, False, False),
    "lstm": ("lstm", False, False, True),
    "lstm_no_bias": ("lstm", False, False, False),
    "lstm_proj": ("lstm", True, False, True),
    "lstm_peephole": ("lstm", False, True, True),
    "lstm_proj_peephole": ("lstm", True, True, True),
    "lstm_coupled": ("lstm_coupled", False, False, True),
    "lstm_coupled_peephole": ("lstm_coupled", False, True, True),
    "lstm_coupled_proj_peephole_no_bias": ("lstm_coupled", True, True, False),
    "gru": ("gru", False, False, True),
    "gru_no_bias": ("gru", False, False, False),
    "gru_reset_before": ("gru_reset_before", False, False, True),
    "gru_reset_before_no_bias": ("gru_reset_before", False, False, False),
}


def with_odd_unit_strides(tensor):
    """``tensor``'s values in a tensor whose size-1 dimensions have a stride no contiguous
    tensor of that shape has (one past its element count).

    Such a tensor still counts as contiguous (``is_contiguous()`` ignores the stride of a
    size-1 dimension), so ``contiguous()`` returns it as it is. A transpose makes one: a
    batch-first input with T = 1 or I = 1, or ``x.t()`` of a (1, N) matrix.
    """
    sizes = tuple(tensor.shape)
    odd = tensor.numel() + 1
    strides = [odd if size == 1 else step for size, step in zip(sizes, torch.empty(sizes).stride())]
    base = torch.zeros(max(tensor.numel(), 1), dtype=tensor.dtype, device=tensor.device)
    restrided = base.as_strided(sizes, strides)
    restrided.copy_(tensor.detach())
    assert restrided.is_contiguous() and restrided.stride() != torch.empty(sizes).stride()
    return restrided.requires_grad_(tensor.requires_grad)
