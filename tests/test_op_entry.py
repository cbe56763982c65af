"""Eager calls of the layer, cell and pool ops take seqkern._C's entry point, the same dispatcher
call as torch.ops without its Python argument handling (seqkern/ops/_entry.py); whatever
torch.ops does in Python, __torch_function__ of modes and tensor subclasses and Dynamo's
tracing, still sees torch.ops."""
import pytest
import torch
from support import Inputs

import seqkern
import seqkern.functional as SF
from seqkern.ops import pooling as pooling_ops
from seqkern.ops import recurrent as recurrent_ops


class RecordingMode(torch.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


class LoggedTensor(torch.Tensor):
    """A tensor subclass with a __torch_function__ of its own."""

    seen = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(func)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


def pool(x):
    return SF.max_pool2d(x, 2)


def cell(x):
    torch.manual_seed(0)
    return seqkern.nn.GRUCell(x.shape[-1], 5).double()(x)


def layer(x):
    torch.manual_seed(0)
    return seqkern.nn.LSTM(x.shape[-1], 5, proj_size=3).double()(x)[0]


CALLS = {"pool": (pool, lambda inputs: inputs.randn(1, 2, 4, 4), "max_pool", pooling_ops, "_direct_max_pool"),
         "cell": (cell, lambda inputs: inputs.randn(3, 4), "recurrent_cell", recurrent_ops, "direct_recurrent_cell"),
         "layer": (layer, lambda inputs: inputs.randn(6, 3, 4), "recurrent_layer", recurrent_ops,
                   "direct_recurrent_layer")}


@pytest.mark.parametrize("name", CALLS)
def test_eager_calls_take_the_direct_entry_with_torch_ops_numbers(name, monkeypatch):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    run, make_input, op_name, module, direct_name = CALLS[name]
    x = make_input(Inputs())
    direct_calls = []
    direct = getattr(module, direct_name)

    def counting(*args):
        direct_calls.append(args)
        return direct(*args)

    monkeypatch.setattr(module, direct_name, counting)
    direct_result = run(x)
    assert len(direct_calls) == 1
    # The torch.ops overload on the same arguments gives the same bits.
    registered = getattr(torch.ops.seqkern, op_name).default
    assert all(torch.equal(a, b) for a, b in zip(direct(*direct_calls[0]), registered(*direct_calls[0])))
    assert torch.equal(direct_result, run(x))


@pytest.mark.parametrize("name", CALLS)
def test_torch_function_modes_and_subclasses_see_the_op(name, monkeypatch):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    run, make_input, op_name, _, _ = CALLS[name]
    x = make_input(Inputs())
    registered = getattr(torch.ops.seqkern, op_name).default
    expected = run(x)
    mode = RecordingMode()
    with mode:
        assert torch.equal(run(x), expected)
    assert registered in mode.seen
    LoggedTensor.seen.clear()
    output = run(x.as_subclass(LoggedTensor))
    assert registered in LoggedTensor.seen
    assert torch.equal(output.as_subclass(torch.Tensor), expected)


@pytest.mark.parametrize("geometry", [([], [2], [1], [0, 0]), ([2], [2], [1], [0]), ([2, 2], [0, 1], [1, 1], [0] * 4)])
def test_the_direct_pool_entry_runs_the_ops_checks(geometry):
    """Behind both entries the op checks its arguments in C++, with one message."""
    x = torch.zeros(1, 1, 4, 4)
    messages = []
    for entry in (pooling_ops._direct_max_pool, torch.ops.seqkern.max_pool.default):
        with pytest.raises(ValueError) as caught:
            entry(x, *geometry, False, 0.0, None)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]


def test_the_direct_entries_run_under_fake_tensor_mode(monkeypatch):
    """Fake tensors are a dispatcher-level mode: the direct entries reach the fake kernels."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    torch.manual_seed(0)
    modules = {"pool": (seqkern.nn.MaxPool2d(2), (1, 2, 4, 4), (1, 2, 2, 2)),
               "cell": (seqkern.nn.GRUCell(4, 5), (3, 4), (3, 5)),
               "layer": (seqkern.nn.LSTM(4, 5, num_layers=2), (6, 3, 4), (6, 3, 5))}
    # The modules' parameters stay real, as a model's do when only its inputs are faked.
    with FakeTensorMode(allow_non_fake_inputs=True):
        for name, (module, input_shape, output_shape) in modules.items():
            output = module(torch.randn(input_shape))
            output = output[0] if isinstance(output, tuple) else output
            assert output.shape == output_shape, name
