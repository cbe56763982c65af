"""The NumPy reference as a backend (SEQKERN_BACKEND=reference): an oracle, never a fallback.

Tensors become float64 arrays, the reference computes, and results come back in the dtype
and on the device of the first floating-point tensor argument. ``None`` results become
empty (0,) tensors, as every backend returns them.
"""
import numpy as np
import torch

from .. import reference


def _to_array(value):
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu()
        if array.dtype.is_floating_point:
            array = array.double()
        return array.numpy()
    return value


def _adapt(function):
    def run(*args):
        like = next(a for a in args if isinstance(a, torch.Tensor) and a.dtype.is_floating_point)
        results = function(*[_to_array(a) for a in args])

        def to_tensor(result):
            if result is None:
                return like.new_empty((0,))
            array = np.asarray(result)
            dtype = like.dtype if array.dtype.kind == "f" else torch.int64
            return torch.from_numpy(np.ascontiguousarray(array)).to(device=like.device, dtype=dtype)

        return tuple(to_tensor(r) for r in results)

    run.__name__ = function.__name__
    run.__doc__ = function.__doc__
    return run


recurrent_layer_forward = _adapt(reference.recurrent_layer_forward)
recurrent_layer_backward = _adapt(reference.recurrent_layer_backward)


def max_pool_forward(input, kernel_size, stride, dilation, padding, ceil_mode, pad_value, index_dtype):
    """reference.max_pool_forward; integer inputs go through float64 (exact below 2**53)."""
    values = input if input.dtype.is_floating_point else input.double()
    output, indices = _adapt(reference.max_pool_forward)(
        values, tuple(kernel_size), tuple(stride), tuple(dilation), tuple(map(tuple, padding)), ceil_mode, pad_value
    )
    return output.to(input.dtype), indices.to(index_dtype) if index_dtype is not None else indices.new_empty((0,))


def max_pool_backward(grad_output, indices, input_size, kernel_size, stride, dilation, padding):
    """reference.max_pool_backward, which scatters along the indices and needs no window geometry."""
    grad_input = reference.max_pool_backward(_to_array(grad_output), _to_array(indices), tuple(input_size))
    return torch.from_numpy(np.ascontiguousarray(grad_input)).to(device=grad_output.device, dtype=grad_output.dtype)
