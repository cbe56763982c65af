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
