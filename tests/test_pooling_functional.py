"""seqkern.functional.max_pool{1,2,3}d, seqkern.nn.MaxPool{1,2,3}d and the seqkern::max_pool
ops: torch parity (values, indices, layouts, gradients, errors), the seqkern padding
extension against the NumPy reference, the seeds' worked example on every backend,
opcheck, torch.compile, and property tests against the reference."""
import itertools
import math
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._prims_common import check_significant_strides
from torch._subclasses.fake_tensor import FakeTensorMode
from support import Inputs, assert_close

import seqkern
import seqkern.functional as SF
from seqkern import reference
from seqkern.ops import pooling as pooling_ops

TORCH_POOLS = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
SEQKERN_POOLS = {1: SF.max_pool1d, 2: SF.max_pool2d, 3: SF.max_pool3d}
CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


def _values(*shape, dtype=torch.float64, seed=0):
    """A coarse grid (many ties) with -inf and NaN entries."""
    x = (Inputs(seed + 11).randn(*shape) * 2).round()
    x.view(-1)[::7] = -math.inf
    x.view(-1)[3::19] = math.nan
    return x.to(dtype)


def _same(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


# (dims, batched shape, kernel_size, stride, padding, dilation, ceil_mode)
SWEEP = [
    (1, (3, 4, 17), 3, 2, 1, 1, True),
    (1, (2, 3, 16), 4, 1, 2, 2, False),
    (1, (2, 3, 9), 2, None, 0, 1, False),
    (2, (2, 3, 11, 13), 3, 2, 1, 1, False),
    (2, (3, 2, 9, 8), (2, 3), (1, 2), 1, (2, 1), True),
    (2, (1, 5, 7, 7), 3, 3, 0, 1, True),
    (2, (2, 3, 5, 6), 2, 1, 0, 1, False),
    (2, (2, 4, 10, 9), 2, None, 1, 1, True),
    (3, (2, 2, 5, 6, 7), 3, 2, 1, 1, True),
    (3, (1, 3, 4, 5, 6), (2, 3, 2), (1, 2, 1), (1, 0, 1), (1, 1, 2), False),
    (3, (2, 2, 3, 5, 4), 2, None, 0, 1, False),
]
SWEEP_IDS = [f"{c[0]}d-{'x'.join(map(str, c[1]))}-k{c[2]}-s{c[3]}-p{c[4]}-d{c[5]}-ceil{int(c[6])}" for c in SWEEP]


def _layout_input(dims, shape, layout, dtype):
    if layout == "noncontiguous":
        wide = _values(*shape[:-1], 2 * shape[-1] + 1, dtype=dtype)
        return wide[..., 1::2]
    x = _values(*shape, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CHANNELS_LAST[dims])
    return x


def _with_layouts(cases, ids, layouts=("contiguous", "channels_last", "noncontiguous")):
    """Every case in every layout it has (1-d inputs have no channels_last layout)."""
    return [pytest.param(*case, layout, id=f"{case_id}-{layout}") for case, case_id in zip(cases, ids)
            for layout in layouts if not (layout == "channels_last" and case[0] == 1)]


@pytest.mark.parametrize("dims, shape, kernel, stride, padding, dilation, ceil_mode, layout",
                         _with_layouts(SWEEP, SWEEP_IDS))
def test_matches_torch_forward_and_float64_gradients(dims, shape, kernel, stride, padding, dilation, ceil_mode,
                                                    layout):
    x = _layout_input(dims, shape, layout, torch.float64)
    x_torch = x.clone().requires_grad_() if layout != "noncontiguous" else x.detach().requires_grad_()
    x_ours = x.detach().clone() if layout != "noncontiguous" else x.detach()
    x_ours = x_ours.requires_grad_()
    out_torch, idx_torch = TORCH_POOLS[dims](x_torch, kernel, stride, padding, dilation, ceil_mode, True)
    out_ours, idx_ours = SEQKERN_POOLS[dims](x_ours, kernel, stride, padding, dilation, ceil_mode, True)
    _same(out_ours, out_torch)
    assert torch.equal(idx_ours, idx_torch)
    assert out_ours.stride() == out_torch.stride() and idx_ours.stride() == idx_torch.stride()
    assert not idx_ours.requires_grad
    grad = Inputs(2).randn(*out_torch.shape)
    out_torch.backward(grad)
    out_ours.backward(grad)
    assert torch.equal(x_ours.grad, x_torch.grad)
    assert x_ours.grad.stride() == x_torch.grad.stride()


@pytest.mark.parametrize("dims, shape, kernel, stride, padding, dilation, ceil_mode", SWEEP[::2], ids=SWEEP_IDS[::2])
def test_float32_and_bfloat16_against_torch(dims, shape, kernel, stride, padding, dilation, ceil_mode):
    for dtype in (torch.float32, torch.bfloat16):
        x = Inputs(3).randn(*shape, dtype=dtype)
        x_torch, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_torch = TORCH_POOLS[dims](x_torch, kernel, stride, padding, dilation, ceil_mode)
        out_ours = SEQKERN_POOLS[dims](x_ours, kernel, stride, padding, dilation, ceil_mode)
        _same(out_ours, out_torch)
        grad = Inputs(4).randn(*out_torch.shape, dtype=dtype)
        out_torch.backward(grad)
        out_ours.backward(grad)
        assert_close(x_ours.grad, x_torch.grad, dtype=dtype)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_unbatched_input(dims):
    shape = (3, 9, 8, 7)[: dims + 1]
    x = _values(*shape)
    out_torch, idx_torch = TORCH_POOLS[dims](x, 3, 2, 1, 1, True, True)
    out_ours, idx_ours = SEQKERN_POOLS[dims](x, 3, 2, 1, 1, True, True)
    _same(out_ours, out_torch)
    assert torch.equal(idx_ours, idx_torch)
    _same(SEQKERN_POOLS[dims](x, 3, 2, 1), TORCH_POOLS[dims](x, 3, 2, 1))


@pytest.mark.parametrize("dims, layout", [(1, "contiguous"), (2, "contiguous"), (2, "channels_last"),
                                           (3, "contiguous"), (3, "channels_last")])
def test_empty_batch_forward_and_backward(dims, layout):
    x = torch.randn(0, 3, *(7, 6, 5)[:dims], dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CHANNELS_LAST[dims])
    x.requires_grad_()
    output, indices = SEQKERN_POOLS[dims](x, 2, 1, 1, 1, False, True)
    expected = TORCH_POOLS[dims](x.detach(), 2, 1, 1, 1, False, True)[0]
    assert output.shape == expected.shape and indices.shape == expected.shape
    output.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.uint8, torch.int16, torch.int64])
def test_integer_forward(dims, dtype):
    info = torch.iinfo(dtype)
    x = torch.randint(max(info.min, -50), min(info.max, 50), (2, 3, *(9, 8, 7)[:dims]), dtype=dtype,
                      generator=torch.Generator().manual_seed(5))
    x.view(-1)[::6] = info.min
    expected, expected_indices = TORCH_POOLS[dims](x.double(), 3, 2, 1, 1, True, True)
    # torch has no integer max_pool1d without indices; seqkern does.
    output = SEQKERN_POOLS[dims](x, 3, 2, 1, 1, True)
    output_with_indices, indices = SEQKERN_POOLS[dims](x, 3, 2, 1, 1, True, True)
    assert output.dtype == dtype
    assert torch.equal(output, expected.to(dtype)) and torch.equal(output_with_indices, output)
    assert torch.equal(indices, expected_indices)


def test_ties_nan_and_all_minus_inf_windows_match_torch():
    nan, inf = math.nan, math.inf
    x = torch.tensor([[[[1.0, nan, 3.0, nan, -inf, -inf],
                        [nan, 2.0, 3.0, 3.0, -inf, -inf]]]])
    for layout in (torch.contiguous_format, torch.channels_last):
        xx = x.contiguous(memory_format=layout)
        out_torch, idx_torch = F.max_pool2d(xx, 2, return_indices=True)
        out_ours, idx_ours = SF.max_pool2d(xx, 2, return_indices=True)
        _same(out_ours, out_torch)
        assert idx_ours.tolist() == idx_torch.tolist() == [[[[6, 3, 4]]]]


def test_index_dtype_follows_what_the_caller_needs(monkeypatch):
    """No indices for inference, int32 ones when only backward reads them, int64 when returned."""
    calls = []

    def recording(entry):
        def record(*args):
            calls.append(args[-1])
            return entry(*args)
        return record

    for entry in ("max_pool", "_direct_max_pool"):
        monkeypatch.setattr(pooling_ops, entry, recording(getattr(pooling_ops, entry)))
    x = torch.randn(2, 3, 9, 9)
    SF.max_pool2d(x, 3, 2, 1)
    with torch.no_grad():
        SF.max_pool2d(x.requires_grad_(), 3, 2, 1)
    SF.max_pool2d(x, 3, 2, 1)
    SF.max_pool2d(x.detach(), 3, 2, 1, return_indices=True)
    assert calls == [None, None, torch.int32, torch.int64]


def test_op_refuses_to_track_gradients_without_indices():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    with pytest.raises(RuntimeError, match="index_dtype=torch.int32 or torch.int64"):
        torch.ops.seqkern.max_pool(x, [2, 2], [2, 2], [1, 1], [0, 0, 0, 0], False, -math.inf, None)


# ---------------------------------------------------------------------------------------
# The seqkern extension: padding modes and pad_value, against the NumPy reference.
# ---------------------------------------------------------------------------------------
EXTENSION = [
    (1, (2, 3, 10), 3, 2, 1, "same", 0.0, False),
    (1, (2, 3, 10), 4, 3, 1, "valid", -math.inf, True),
    (2, (2, 3, 7, 6), (3, 2), (2, 1), (1, 2), "same", -math.inf, False),
    (2, (2, 3, 7, 6), 2, 2, 1, ((0, 2), (1, 1)), -0.5, True),
    (2, (1, 2, 5, 5), 3, 1, 1, 1, 0.0, False),
    (3, (1, 2, 5, 4, 6), 2, (2, 1, 2), 1, "same", 0.0, True),
    (3, (1, 2, 4, 5, 3), (2, 3, 2), 1, (1, 1, 2), ((1, 0), (0, 2), (2, 1)), 1.0, False),
]


def _reference_padding(padding, dims, shape, kernel, stride, dilation):
    def per_axis(value):
        return tuple(value) if isinstance(value, tuple) else (value,) * dims

    kernel, stride, dilation = per_axis(kernel), per_axis(stride), per_axis(dilation)
    if padding == "valid":
        pairs = ((0, 0),) * dims
    elif padding == "same":
        pairs = tuple(reference.same_padding(n, k, s, d) for n, k, s, d in zip(shape[2:], kernel, stride, dilation))
    elif isinstance(padding, int):
        pairs = ((padding, padding),) * dims
    else:
        pairs = padding
    return kernel, stride, dilation, pairs


@pytest.mark.parametrize("dims, shape, kernel, stride, dilation, padding, pad_value, ceil_mode, layout",
                         _with_layouts(EXTENSION, [f"{c[0]}d-{c[5]}-pad{c[6]}" for c in EXTENSION],
                                       ("contiguous", "channels_last")))
def test_extension_matches_reference(dims, shape, kernel, stride, dilation, padding, pad_value, ceil_mode, layout):
    x = _values(*shape)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CHANNELS_LAST[dims])
    x.requires_grad_()
    output, indices = SEQKERN_POOLS[dims](x, kernel, stride, padding, dilation, ceil_mode, True, pad_value=pad_value)
    k, s, d, pairs = _reference_padding(padding, dims, shape, kernel, stride, dilation)
    expected, expected_indices = reference.max_pool_forward(x.detach().numpy(), k, s, d, pairs, ceil_mode, pad_value)
    _same(output, torch.from_numpy(expected))
    assert torch.equal(indices, torch.from_numpy(expected_indices))
    grad = Inputs(8).randn(*output.shape)
    output.backward(grad)
    expected_grad = reference.max_pool_backward(grad.numpy(), expected_indices, shape)
    assert torch.equal(x.grad, torch.from_numpy(expected_grad))


SEED_INPUT = [[1, 2, 3, 4, 5], [9, 8, 7, 6, 0], [0, 2, 4, 6, 8], [2, 3, 4, 5, 1], [6, 7, 8, 9, 0]]


@pytest.mark.parametrize("backend", ["cpp", "triton", "reference"])
def test_seed_worked_example(backend, monkeypatch):
    """Lecture "Pooling and Strides": 2x2 max pool of the 5x5 input, zero-padded on the
    bottom and right ("same" with pad_value 0), strides (2, 1) and (1, 2)."""
    monkeypatch.setenv("SEQKERN_BACKEND", backend)
    x = torch.tensor(SEED_INPUT, dtype=torch.float32)[None, None]
    output, indices = SF.max_pool2d(x, 2, (2, 1), "same", return_indices=True, pad_value=0.0)
    assert output[0, 0].tolist() == [[9, 8, 7, 6, 5], [3, 4, 6, 8, 8], [7, 8, 9, 9, 0]]
    assert indices[0, 0].tolist() == [[5, 6, 7, 8, 4], [16, 12, 13, 14, 14], [21, 22, 23, 23, 24]]
    layer = seqkern.nn.MaxPool2d(2, (1, 2), padding="same", pad_value=0.0)
    assert layer(x)[0, 0].tolist() == [[9, 7, 5], [9, 7, 8], [3, 6, 8], [7, 9, 1], [7, 9, 0]]


def test_padded_maximum_gets_index_minus_one_and_no_gradient():
    x = torch.full((1, 1, 3), -2.0, requires_grad=True)
    output, indices = SF.max_pool1d(x, 2, 2, ((1, 0),), return_indices=True, pad_value=0.0)
    assert output.tolist() == [[[0.0, -2.0]]] and indices.tolist() == [[[-1, 1]]]
    output.sum().backward()
    assert x.grad.tolist() == [[[0.0, 1.0, 0.0]]]


def test_extension_argument_errors():
    x = torch.randn(1, 2, 6, 6)
    with pytest.raises(ValueError, match="padding must be an int, a tuple of ints, 'same', 'valid'"):
        SF.max_pool2d(x, 2, padding="full")
    with pytest.raises(ValueError, match=r"one \(before, after\) pair"):
        SF.max_pool2d(x, 2, padding=((1, 1),))
    with pytest.raises(ValueError, match=r"one \(before, after\) pair"):
        SF.max_pool2d(x, 2, padding=((1, -1), (0, 0)))
    with pytest.raises(ValueError, match="pad_value must not be NaN"):
        SF.max_pool2d(x, 2, pad_value=math.nan)
    with pytest.raises(ValueError, match="is not a value of the input dtype"):
        SF.max_pool2d(x.to(torch.int8), 2, padding=1, pad_value=0.5)
    with pytest.raises(TypeError, match="pad_value must be a real number"):
        SF.max_pool2d(x, 2, pad_value="0")
    with pytest.raises(RuntimeError, match="Output size is too small"):
        SF.max_pool2d(x, 7, padding="valid")


# ---------------------------------------------------------------------------------------
# Property tests against the reference: random shapes, windows, padding, pad values.
# ---------------------------------------------------------------------------------------
@st.composite
def pool_problems(draw):
    dims = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 7)) for _ in range(dims)]
    kernel = [draw(st.integers(1, 4)) for _ in range(dims)]
    stride = [draw(st.integers(1, 3)) for _ in range(dims)]
    dilation = [draw(st.integers(1, 2)) for _ in range(dims)]
    padding = [(draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(dims)]
    ceil_mode = draw(st.booleans())
    pad_value = draw(st.sampled_from([-math.inf, 0.0, -1.5]))
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 3)), *sizes)
    channels_last = dims > 1 and draw(st.booleans())
    seed = draw(st.integers(0, 1000))
    return dims, shape, kernel, stride, dilation, padding, ceil_mode, pad_value, channels_last, seed


def _check_against_reference(problem):
    dims, shape, kernel, stride, dilation, padding, ceil_mode, pad_value, channels_last, seed = problem
    out_sizes = [reference.max_pool_output_size(n, k, s, d, b, a, ceil_mode)
                 for n, k, s, d, (b, a) in zip(shape[2:], kernel, stride, dilation, padding)]
    x = _values(*shape, seed=seed)
    if channels_last:
        x = x.contiguous(memory_format=CHANNELS_LAST[dims])
    x.requires_grad_()
    if min(out_sizes) < 1:
        with pytest.raises(RuntimeError, match="Output size is too small"):
            SEQKERN_POOLS[dims](x, kernel, stride, padding, dilation, ceil_mode, pad_value=pad_value)
        return
    output, indices = SEQKERN_POOLS[dims](x, kernel, stride, padding, dilation, ceil_mode, True, pad_value=pad_value)
    expected, expected_indices = reference.max_pool_forward(
        x.detach().numpy(), tuple(kernel), tuple(stride), tuple(dilation), tuple(padding), ceil_mode, pad_value)
    _same(output, torch.from_numpy(expected))
    assert np.array_equal(indices.numpy(), expected_indices)
    grad = Inputs(seed).randn(*output.shape)
    output.backward(grad)
    expected_grad = reference.max_pool_backward(grad.numpy(), expected_indices, shape)
    assert torch.equal(x.grad, torch.from_numpy(expected_grad))


@settings(max_examples=60, deadline=None)
@given(pool_problems())
def test_cpp_matches_reference_on_random_problems(problem):
    _check_against_reference(problem)


@settings(max_examples=15, deadline=None)
@given(pool_problems())
def test_triton_matches_reference_on_random_problems(problem):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEQKERN_BACKEND", "triton")
        _check_against_reference(problem)


# ---------------------------------------------------------------------------------------
# Layers.
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_layers_mirror_torch(dims):
    ours_class = getattr(seqkern.nn, f"MaxPool{dims}d")
    torch_class = getattr(torch.nn, f"MaxPool{dims}d")
    for args, kwargs in (((3,), {}), ((2, 1, 1, 2, True, True), {}), (((1, 2, 3)[:dims] if dims > 1 else 3,),
                                                                     {"stride": None})):
        ours, theirs = ours_class(*args, **kwargs), torch_class(*args, **kwargs)
        assert isinstance(ours, torch_class)
        assert repr(ours) == repr(theirs)
        assert ours.__dict__.keys() - {"pad_value"} == theirs.__dict__.keys()
        x = _values(2, 3, *(9, 8, 7)[:dims])
        result, expected = ours(x), theirs(x)
        if theirs.return_indices:
            _same(result[0], expected[0])
            assert torch.equal(result[1], expected[1])
        else:
            _same(result, expected)
    assert repr(ours_class(2, pad_value=0.0)).endswith("ceil_mode=False, pad_value=0.0)")
    assert list(ours_class(2).state_dict()) == []


def test_layer_repr_matches_torch_parity_note():
    assert repr(seqkern.nn.MaxPool2d(3)) == "MaxPool2d(kernel_size=3, stride=3, padding=0, dilation=1, ceil_mode=False)"


# ---------------------------------------------------------------------------------------
# Errors: same type and message as torch.
# ---------------------------------------------------------------------------------------
def _t(*shape, dtype=torch.float32, layout=None):
    def make():
        x = torch.zeros(shape, dtype=dtype)
        return x.contiguous(memory_format=layout) if layout is not None else x

    return make


ERRORS = [
    (1, _t(1, 1, 8), (3,), {"padding": 2}),
    (1, _t(1, 1, 8), (3,), {"padding": -1}),
    (1, _t(1, 1, 8), (3,), {"stride": 0}),
    (1, _t(1, 1, 8), (0,), {}),
    (1, _t(1, 1, 8), (2,), {"dilation": 0}),
    (1, _t(1, 1, 2), (3,), {}),
    (1, _t(3, 2), (3,), {}),
    (1, _t(1, 1, 1, 8), (3,), {}),
    (1, _t(8), (3,), {}),
    (1, _t(1, 0, 8), (3,), {}),
    (1, _t(1, 2, 0), (3,), {}),
    (1, _t(1, 1, 8), ((3, 3),), {}),
    (1, _t(1, 1, 8), (3,), {"stride": (3, 3)}),
    (1, _t(1, 1, 8), (3, 1, (0, 0)), {}),
    (1, _t(1, 1, 8), (3, 1, 0, (1, 1)), {}),
    (1, _t(1, 1, 8), (3.0,), {}),
    (1, _t(1, 1, 8), ([True],), {}),
    (1, _t(1, 1, 8), (3,), {"padding": 2, "dilation": 2}),
    (1, _t(1, 1, 8), (3,), {"ceil_mode": 1}),
    (1, _t(1, 1, 8, dtype=torch.bool), (2,), {}),
    (2, _t(1, 1, 4, 4), (3,), {"padding": 2}),
    (2, _t(1, 1, 4, 4), (3,), {"padding": 2, "dilation": 2}),
    (2, _t(1, 1, 4, 4), (3,), {"padding": -1}),
    (2, _t(1, 1, 4, 4), (3,), {"stride": 0}),
    (2, _t(1, 1, 4, 4), (3,), {"stride": -1}),
    (2, _t(1, 1, 4, 4), (0,), {}),
    (2, _t(1, 1, 4, 4), (-1,), {}),
    (2, _t(1, 1, 4, 4), (-3, 1), {}),
    (2, _t(1, 1, 4, 4), (2,), {"dilation": 0}),
    (2, _t(1, 1, 4, 4), (5,), {}),
    (2, _t(3, 6, 2), ((2, 3),), {}),
    (2, _t(1, 1, 1, 4, 4), (2,), {}),
    (2, _t(4, 4), (2,), {}),
    (2, _t(1, 0, 50, 32), (2,), {}),
    (2, _t(0, 50, 32), (2,), {}),
    (2, _t(1, 2, 0, 32), (2,), {}),
    (2, _t(1, 0, 5, 5, layout=torch.channels_last), (2,), {}),
    (2, _t(1, 2, 3, 4, 5, layout=torch.channels_last_3d), (2,), {}),
    (2, _t(1, 1, 4, 4), ((3, 3, 3),), {}),
    (2, _t(1, 1, 4, 4), (3, (3, 3, 3)), {}),
    (2, _t(1, 1, 4, 4), (3, 1, (1, 1, 1)), {}),
    (2, _t(1, 1, 4, 4), (3, 1, 1, (1, 1, 1)), {}),
    (2, _t(1, 1, 4, 4), ([],), {}),
    (2, _t(1, 1, 4, 4), (2.0,), {}),
    (2, _t(1, 1, 4, 4), ([2, 2.0],), {}),
    (2, _t(1, 1, 4, 4), ("2",), {}),
    (2, _t(1, 1, 4, 4), (None,), {}),
    (2, _t(1, 1, 4, 4), (True,), {}),
    (2, _t(1, 1, 4, 4), (2, 1.5), {}),
    (2, _t(1, 1, 4, 4), (2, 1, 0.5), {}),
    (2, _t(1, 1, 4, 4), (2, 1, 0, 1.0), {}),
    (2, _t(1, 1, 4, 4), (2, 1, 2**33), {}),
    (2, _t(1, 1, 4, 4), (torch.tensor(2.0),), {}),
    (2, _t(1, 1, 4, 4), (0, 0, -1, 0), {}),
    (2, _t(1, 1, 4, 4), (2,), {"ceil_mode": None}),
    (2, _t(1, 1, 4, 4, dtype=torch.bool), (2,), {}),
    (2, _t(1, 1, 4, 4, dtype=torch.complex64), (2,), {}),
    (2, _t(1, 1, 4, 4, dtype=torch.uint16), (2,), {}),
    (3, _t(1, 1, 4, 4, 4), (3,), {"padding": 2}),
    (3, _t(1, 1, 4, 4, 4), (3,), {"padding": -1}),
    (3, _t(1, 1, 4, 4, 4), (3,), {"stride": 0}),
    (3, _t(1, 1, 4, 4, 4), (0,), {}),
    (3, _t(1, 1, 4, 4, 4), (2,), {"dilation": 0}),
    (3, _t(1, 1, 4, 4, 4), (5,), {}),
    (3, _t(3, 6, 6, 2), ((2, 2, 3),), {}),
    (3, _t(1, 1, 1, 4, 4, 4), (2,), {}),
    (3, _t(4, 4, 4), (2,), {}),
    (3, _t(1, 0, 4, 4, 4), (2,), {}),
    (3, _t(1, 1, 0, 4, 4), (2,), {}),
    (3, _t(0, 5, 5, 5), (3,), {}),
    (3, _t(2, 3, 4, 5, layout=torch.channels_last), (2,), {}),
    (3, _t(1, 1, 4, 4, 4), ((3, 3),), {}),
    (3, _t(1, 1, 4, 4, 4), (3, (3, 3)), {}),
    (3, _t(1, 1, 4, 4, 4), (2.0,), {}),
    (3, _t(1, 1, 4, 4, 4, dtype=torch.bool), (2,), {}),
]


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("return_indices", [False, True])
@pytest.mark.parametrize("dims, make_input, args, kwargs", ERRORS)
def test_errors_match_torch(dims, make_input, args, kwargs, return_indices, requires_grad):
    def call(pool):
        x = make_input()
        if requires_grad and x.dtype.is_floating_point:
            x.requires_grad_()
        return pool(x, *args, return_indices=return_indices, **kwargs)

    with pytest.raises(Exception) as expected:
        call(TORCH_POOLS[dims])
    with pytest.raises(Exception) as actual:
        call(SEQKERN_POOLS[dims])
    assert type(actual.value) is type(expected.value)
    assert str(actual.value) == str(expected.value)


# Values an int[] argument's element (or the whole argument) may be, as torch's parser sees
# them: it checks the first element's type (bool is not an int there) and unpacks the rest
# (where bool is), and names C types with their module (numpy.float64).
PARSER_VALUES = {
    "int": lambda: 2, "bool": lambda: True, "float": lambda: 2.0, "numpy int64": lambda: np.int64(2),
    "numpy float64": lambda: np.float64(2.0), "numpy bool": lambda: np.bool_(True),
    "int tensor": lambda: torch.tensor(2), "float tensor": lambda: torch.tensor(2.0),
    "bool tensor": lambda: torch.tensor(True), "one-element tensor": lambda: torch.tensor([2]),
    "None": lambda: None, "str": lambda: "a", "numpy array": lambda: np.array([2, 2]),
}
PARSER_DEFAULTS = {"kernel_size": 2, "stride": 1, "padding": 0, "dilation": 1}


@pytest.mark.parametrize("argument", PARSER_DEFAULTS)
@pytest.mark.parametrize("dims", [2, 3])
def test_int_list_arguments_parse_as_torchs(dims, argument):
    x = torch.zeros(1, 1, *[6] * dims)
    mismatches = []
    for name, make in PARSER_VALUES.items():
        for where in ["whole", *range(dims)]:
            if argument == "padding" and where == "whole" and name == "str":
                continue  # the seqkern extension's: "same", "valid" or its own error
            arguments = dict(PARSER_DEFAULTS)
            arguments[argument] = make() if where == "whole" else [
                make() if axis == where else PARSER_DEFAULTS[argument] for axis in range(dims)]
            for return_indices in (False, True):
                outcomes = [_outcome(lambda pool=pool: pool(x, **arguments, return_indices=return_indices))
                            for pool in (TORCH_POOLS[dims], SEQKERN_POOLS[dims])]
                expected, actual = outcomes
                same = actual[0] is expected[0] and (
                    torch.equal(actual[1][0] if return_indices else actual[1],
                                expected[1][0] if return_indices else expected[1])
                    if expected[0] == "value" else actual[1] == expected[1])
                if not same:
                    mismatches.append((name, where, return_indices, expected, actual))
    assert not mismatches, mismatches[:3]


def test_other_argument_type_names_match_torch():
    x = torch.zeros(1, 1, 4, 4)
    for call in (lambda pool: pool(np.zeros((1, 1, 4, 4)), 2), lambda pool: pool(x, 2, ceil_mode=np.bool_(True))):
        expected, actual = _outcome(lambda: call(F.max_pool2d)), _outcome(lambda: call(SF.max_pool2d))
        assert expected[0] is TypeError and actual == expected


def _outcome(call):
    try:
        return ("value", call())
    except Exception as error:  # the outcome compared: its type and message
        return (type(error), str(error))


# (dims, a call's input and arguments that pass, then ones that torch treats differently
# although the check cache could see the same key: equal values of other types, another
# layout or shape). Each probe runs after its warm-up call, whose geometry is cached.
CACHE_PROBES = [
    (2, lambda: torch.zeros(1, 1, 4, 4), (1,), {}, lambda: torch.zeros(1, 1, 4, 4), (True,), {}),
    (2, lambda: torch.zeros(1, 1, 4, 4), (2,), {}, lambda: torch.zeros(1, 1, 4, 4), (2.0,), {}),
    (2, lambda: torch.zeros(1, 1, 4, 4), (2, (1, 1)), {}, lambda: torch.zeros(1, 1, 4, 4), (2, (1, True)), {}),
    (2, lambda: torch.zeros(1, 1, 4, 4), ([2, 2],), {}, lambda: torch.zeros(1, 1, 4, 4), ([2, 2.0],), {}),
    (2, lambda: torch.zeros(1, 1, 4, 4), ([2, 2],), {}, lambda: torch.zeros(1, 1, 4, 4), ((2, 2, 2),), {}),
    (2, lambda: torch.zeros(1, 1, 4, 4), (2,), {"ceil_mode": False}, lambda: torch.zeros(1, 1, 4, 4), (2,),
     {"ceil_mode": 0}),
    (2, lambda: torch.zeros(1, 1, 4, 4), (3, 1, 1), {}, lambda: torch.zeros(1, 1, 1, 1), (3, 1, 1), {}),
    (3, lambda: torch.zeros(2, 4, 4, 4), (2,), {}, lambda: torch.zeros(2, 4, 4, 4).to(
        memory_format=torch.channels_last), (2,), {}),
    (1, lambda: torch.zeros(1, 2, 5), (2,), {}, lambda: torch.zeros(1, 2, 5, dtype=torch.bool), (2,), {}),
]


@pytest.mark.parametrize("dims, warm_input, warm_args, warm_kwargs, probe_input, probe_args, probe_kwargs",
                         CACHE_PROBES)
def test_cached_checks_let_no_other_argument_through(dims, warm_input, warm_args, warm_kwargs, probe_input,
                                                     probe_args, probe_kwargs):
    """A pool's checked geometry is cached by its arguments and the input's shape and dtype;
    an argument that only compares equal to a cached one (True == 1, 2.0 == 2) or an input
    that differs elsewhere still gets torch's own outcome."""
    SEQKERN_POOLS[dims](warm_input(), *warm_args, **warm_kwargs)
    expected = _outcome(lambda: TORCH_POOLS[dims](probe_input(), *probe_args, **probe_kwargs))
    actual = _outcome(lambda: SEQKERN_POOLS[dims](probe_input(), *probe_args, **probe_kwargs))
    assert actual[0] is expected[0]
    if expected[0] == "value":
        assert torch.equal(actual[1], expected[1])
    else:
        assert actual[1] == expected[1]


def test_the_check_cache_stays_bounded():
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    for width in range(2, 2 + pooling_ops._MAX_GEOMETRIES + 40):
        SF.max_pool1d(torch.zeros(1, 1, width), 2)
        assert len(pooling_ops._GEOMETRIES) <= pooling_ops._MAX_GEOMETRIES
    assert torch.equal(SF.max_pool2d(x, 2), F.max_pool2d(x, 2))


def test_cached_checks_still_check_pad_value():
    # 0.0 and -0.0 are one key, but each call pads with its own zero.
    x = torch.full((1, 1, 2, 2), -1.0)
    for pad_value in (0.0, -0.0):
        pooled = SF.max_pool2d(x, 2, 1, padding=1, pad_value=pad_value)
        assert str(pooled[0, 0, 0, 0].item()) == str(pad_value)
    SF.max_pool2d(torch.zeros(1, 1, 4, 4), 2, pad_value=1)
    with pytest.raises(TypeError, match="pad_value must be a real number, not bool"):
        SF.max_pool2d(torch.zeros(1, 1, 4, 4), 2, pad_value=True)
    SF.max_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.int8), 2, pad_value=100)
    with pytest.raises(ValueError, match="is not a value of the input dtype torch.int8"):
        SF.max_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.int8), 2, pad_value=1000)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_non_tensor_input_and_layer_errors_match_torch(dims):
    for pool in (TORCH_POOLS[dims], SEQKERN_POOLS[dims]):
        with pytest.raises(TypeError, match=r"argument 'input' \(position 1\) must be Tensor, not NoneType"):
            pool(None, 2)
    x = torch.zeros(1, 1, *(4, 4, 4)[:dims])
    with pytest.raises(RuntimeError) as expected:
        getattr(torch.nn, f"MaxPool{dims}d")(3, padding=2)(x)
    with pytest.raises(RuntimeError) as actual:
        getattr(seqkern.nn, f"MaxPool{dims}d")(3, padding=2)(x)
    assert str(actual.value) == str(expected.value)


# ---------------------------------------------------------------------------------------
# torch.library integration.
# ---------------------------------------------------------------------------------------
def test_opcheck_forward_and_backward_ops():
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.seqkern.max_pool.default,
                          (x, [3, 2], [2, 1], [1, 1], [1, 1, 0, 1], True, -math.inf, torch.int64))
    torch.library.opcheck(torch.ops.seqkern.max_pool.default,
                          (x.detach(), [2, 2], [2, 2], [1, 1], [0, 1, 1, 0], False, 0.0, None))
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(torch.ops.seqkern.max_pool.default,
                          (x_cl, [2, 2], [1, 1], [1, 1], [0, 0, 0, 0], False, -math.inf, torch.int32))
    _, indices = torch.ops.seqkern.max_pool(x.detach(), [3, 2], [2, 1], [1, 1], [1, 1, 0, 1], True, -math.inf,
                                            torch.int32)
    grad = torch.randn(indices.shape, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.seqkern.max_pool_backward.default,
                          (grad, indices, list(x.shape), [3, 2], [2, 1], [1, 1], [1, 1, 0, 1], False))


# Bad arguments straight into the ops: the C++ CPU kernels check them as the Python backend
# path (SEQKERN_BACKEND set) does, with the same exception types and messages.
_X = torch.zeros(1, 2, 5, 5)
_FORWARD = (_X, [2, 2], [2, 2], [1, 1], [0, 0, 0, 0], False, -math.inf, None)
_BAD_FORWARD = {
    "rank": dict(input=torch.zeros(2, 3)),
    "dtype": dict(input=torch.zeros(1, 2, 5, 5, dtype=torch.complex64)),
    "count": dict(kernel_size=[2]),
    "stride": dict(stride=[0, 1]),
    "dilation": dict(dilation=[1, -1]),
    "padding": dict(padding=[-1, 0, 0, 0]),
    "empty plane": dict(input=torch.zeros(1, 2, 0, 5)),
    "nan pad": dict(pad_value=math.nan),
    "fractional pad": dict(input=torch.zeros(1, 2, 5, 5, dtype=torch.int8), pad_value=0.5),
    "pad out of range": dict(input=torch.zeros(1, 2, 5, 5, dtype=torch.int8), pad_value=300.0),
    "index dtype": dict(index_dtype=torch.int16),
    "too small": dict(kernel_size=[7, 2]),
    "too small by a stride": dict(kernel_size=[6, 2]),
    "too small 1d": dict(input=torch.zeros(1, 2, 5), kernel_size=[7], stride=[1], dilation=[1], padding=[0, 0]),
}
_BAD_BACKWARD = {
    "indices shape": dict(indices=torch.zeros(1, 2, 3, 3, dtype=torch.int64)),
    "indices dtype": dict(indices=torch.zeros(1, 2, 2, 2, dtype=torch.int16)),
    "input size": dict(input_size=[1, 3, 5, 5]),
    "rank": dict(grad_output=torch.ones(2, 2), indices=torch.zeros(2, 2, dtype=torch.int64), input_size=[2, 2]),
    "count": dict(kernel_size=[2]),
    "stride": dict(stride=[2, 0]),
    "padding": dict(padding=[0, 0, -1, 0]),
    "empty plane": dict(input_size=[1, 2, 5, 0]),
}


def _raised(function):
    with pytest.raises(Exception) as caught:
        function()
    return type(caught.value), str(caught.value).split("\n")[0]


@pytest.mark.parametrize("case", list(_BAD_FORWARD), ids=str)
def test_forward_op_checks_arguments_in_cpp_as_in_python(case, monkeypatch):
    names = ("input", "kernel_size", "stride", "dilation", "padding", "ceil_mode", "pad_value", "index_dtype")
    args = {**dict(zip(names, _FORWARD)), **_BAD_FORWARD[case]}
    run = lambda: torch.ops.seqkern.max_pool(*args.values())  # noqa: E731
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    in_cpp = _raised(run)
    monkeypatch.setenv("SEQKERN_BACKEND", "cpp")
    in_python = _raised(run)
    assert in_cpp == in_python
    assert in_cpp[0] in (ValueError, NotImplementedError) and in_cpp[1].startswith("seqkern max_pool: ")


@pytest.mark.parametrize("case", list(_BAD_BACKWARD), ids=str)
def test_backward_op_checks_arguments_in_cpp_as_in_python(case, monkeypatch):
    args = dict(grad_output=torch.ones(1, 2, 2, 2), indices=torch.zeros(1, 2, 2, 2, dtype=torch.int64),
                input_size=[1, 2, 5, 5], kernel_size=[2, 2], stride=[2, 2], dilation=[1, 1], padding=[0, 0, 0, 0],
                channels_last=False)
    args.update(_BAD_BACKWARD[case])
    run = lambda: torch.ops.seqkern.max_pool_backward(*args.values())  # noqa: E731
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    in_cpp = _raised(run)
    monkeypatch.setenv("SEQKERN_BACKEND", "cpp")
    assert in_cpp == _raised(run)
    assert in_cpp[0] is ValueError and in_cpp[1].startswith("seqkern max_pool_backward: ")


@pytest.mark.parametrize("op", ["seqkern::max_pool", "seqkern::max_pool_backward"])
def test_cpu_and_autograd_kernels_are_registered_in_cpp(op):
    table = torch._C._dispatch_dump_table(op).splitlines()
    for key in ("CPU:", "AutogradCPU:"):
        line = next(line for line in table if line.startswith(key))
        assert "pooling_op.cpp" in line, line


def _same_significant_strides(real, fake):
    """Strides of axes longer than 1, the ones torch's fake-tensor checks compare."""
    return check_significant_strides(real, fake, only_cuda=False)[0]


def test_fake_kernel_gives_the_cpu_kernels_strides():
    """The C++ kernel reads the layout with ATen's suggest_memory_format, the fake kernel with
    torch._prims_common's: they agree, also where a size-1 axis makes the layout ambiguous."""
    for rank, last in ((4, torch.channels_last), (5, torch.channels_last_3d)):
        for shape in itertools.product((1, 2), repeat=rank):
            reversed_shape = tuple(reversed(shape))
            for x in (torch.zeros(shape), torch.zeros(shape).contiguous(memory_format=last),
                      torch.zeros(reversed_shape).permute(*reversed(range(rank)))):
                window = [1] * (rank - 2)
                args = (window, window, window, [0] * (2 * rank - 4), False, -math.inf, torch.int64)
                output, indices = torch.ops.seqkern.max_pool(x, *args)
                with FakeTensorMode() as mode:
                    fake_output, fake_indices = torch.ops.seqkern.max_pool(mode.from_tensor(x), *args)
                assert _same_significant_strides(output, fake_output), (shape, x.stride())
                assert _same_significant_strides(indices, fake_indices), (shape, x.stride())
                seed = torch.ones_like(output)
                for channels_last in (False, True):
                    backward_args = (list(x.shape), *args[:4], channels_last)
                    grad = torch.ops.seqkern.max_pool_backward(seed, indices, *backward_args)
                    with FakeTensorMode() as mode:
                        fake_grad = torch.ops.seqkern.max_pool_backward(mode.from_tensor(seed),
                                                                        mode.from_tensor(indices), *backward_args)
                    assert _same_significant_strides(grad, fake_grad), (shape, x.stride(), channels_last)


def test_cpu_ops_run_no_seqkern_python(monkeypatch):
    """Forward, backward and double backward of a pool on CPU go from the op into C++."""
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    inputs = Inputs(4)
    x = inputs.randn(2, 3, 7, 6, requires_grad=True)
    seed = inputs.randn(2, 3, 4, 6, requires_grad=True)
    called = set()

    def record(frame, event, arg):
        if event == "call":
            called.add(frame.f_code.co_filename)

    sys.setprofile(record)
    try:
        output, _ = torch.ops.seqkern.max_pool(x, [3, 2], [2, 1], [1, 1], [1, 1, 0, 1], True, -math.inf, torch.int32)
        (grad,) = torch.autograd.grad(output, x, seed, create_graph=True)
        grad.pow(2).sum().backward()
    finally:
        sys.setprofile(None)
    package = os.path.dirname(seqkern.__file__)
    assert not [name for name in called if name.startswith(package)]
    assert seed.grad is not None and seed.grad.abs().sum() > 0


def test_gradcheck_and_gradgradcheck():
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64, requires_grad=True)

    def pool(t):
        return SF.max_pool2d(t, 3, 2, 1, ceil_mode=True)

    assert torch.autograd.gradcheck(pool, (x,))
    assert torch.autograd.gradgradcheck(pool, (x,))


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("dims, layout", [(1, None), (2, None), (2, torch.channels_last), (3, torch.channels_last_3d)])
def test_forward_mode_ad_matches_torch(dims, layout, requires_grad):
    """A tangent goes through the pool as through torch's (whose pools have forward-mode AD):
    the input's tangent at each argmax, whether or not a gradient is tracked too."""
    inputs = Inputs()
    x = inputs.randn(2, 3, *[7, 6, 5][:dims])
    tangent = inputs.randn(*x.shape)
    if layout is not None:
        x, tangent = x.to(memory_format=layout), tangent.to(memory_format=layout)
    results = []
    for pool in (TORCH_POOLS[dims], SEQKERN_POOLS[dims]):
        with torch.autograd.forward_ad.dual_level():
            dual = torch.autograd.forward_ad.make_dual(x.clone().requires_grad_(requires_grad), tangent)
            output = pool(dual, 3, 2, 1, ceil_mode=True)
            results.append(torch.autograd.forward_ad.unpack_dual(output))
    (expected, expected_tangent), (actual, actual_tangent) = results
    _same(actual, expected)
    _same(actual_tangent, expected_tangent)
    assert actual.requires_grad == requires_grad


def test_forward_mode_ad_of_padded_maximum_and_functorch():
    """A padded maximum (index -1) gets a zero tangent; torch.func's jvp and jacfwd work, and
    gradcheck passes with its forward-mode checks."""
    x = torch.full((1, 1, 3), -2.0, dtype=torch.float64)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x, torch.ones_like(x))
        output = SF.max_pool1d(dual, 2, 2, ((1, 0),), pad_value=0.0)
        assert torch.autograd.forward_ad.unpack_dual(output).tangent.tolist() == [[[0.0, 1.0]]]
    y = Inputs().randn(1, 2, 6, 5)

    def pool(t):
        return SF.max_pool2d(t, 3, 2, 1)

    _same(torch.func.jvp(pool, (y,), (torch.ones_like(y),))[1],
          torch.func.jvp(lambda t: F.max_pool2d(t, 3, 2, 1), (y,), (torch.ones_like(y),))[1])
    _same(torch.func.jacfwd(pool)(y), torch.func.jacrev(lambda t: F.max_pool2d(t, 3, 2, 1))(y))
    assert torch.autograd.gradcheck(pool, (y.requires_grad_(),), check_forward_ad=True,
                                    check_batched_forward_grad=False)


@pytest.mark.parametrize("dims, channels_last", [(1, False), (2, False), (2, True), (3, True)])
def test_torch_func_transforms_match_torch(dims, channels_last):
    """Under a torch.func transform (which the kernels' autograd Function cannot run under) the
    output is the input gathered at the kernel's argmax, in ATen ops; vmap's dimension joins
    the batch. grad, vmap, per-sample grad and jacrev give torch's numbers."""
    inputs = Inputs()
    spatial = [7, 6, 5][:dims]
    if channels_last:
        # Four samples, each channels-last.
        samples = inputs.randn(4, 2, *spatial, 3).movedim(-1, 2)
    else:
        samples = inputs.randn(4, 2, 3, *spatial)
    weights = inputs.randn(*TORCH_POOLS[dims](samples[0], 3, 2, 1, ceil_mode=True).shape)

    def transforms(pool):
        def loss(x):
            return (pool(x, 3, 2, 1, ceil_mode=True) * weights).sum()

        return (torch.func.grad(loss)(samples[0]),
                *torch.func.vmap(lambda x: pool(x, 3, 2, 1, ceil_mode=True, return_indices=True))(samples),
                torch.func.vmap(torch.func.grad(loss))(samples),
                torch.func.jacrev(lambda x: pool(x, 3, 2, 1, ceil_mode=True))(samples[0, :1, :1]))

    for actual, expected in zip(transforms(SEQKERN_POOLS[dims]), transforms(TORCH_POOLS[dims])):
        _same(actual, expected)


def test_vmap_has_a_batching_rule_and_keeps_a_padded_maximum():
    assert torch._C._dispatch_has_kernel_for_dispatch_key("seqkern::max_pool", "FuncTorchBatched")
    x = torch.full((2, 1, 1, 3), -2.0, dtype=torch.float64)
    output, indices = torch.func.vmap(
        lambda t: SF.max_pool1d(t, 2, 2, ((1, 0),), pad_value=0.0, return_indices=True))(x)
    assert output.tolist() == [[[[0.0, -2.0]]]] * 2 and indices.tolist() == [[[[-1, 1]]]] * 2
    gradient = torch.func.grad(lambda t: SF.max_pool1d(t, 2, 2, ((1, 0),), pad_value=0.0).sum())(x[0])
    assert gradient.tolist() == [[[0.0, 1.0, 0.0]]]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_torch_compile_fullgraph_layer_forward_and_backward(layout):
    torch._dynamo.reset()
    layer = seqkern.nn.MaxPool2d(3, 2, 1)
    compiled = torch.compile(layer, fullgraph=True)
    x = Inputs(9).randn(2, 3, 9, 11).contiguous(memory_format=layout)
    x_compiled, x_eager = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_compiled, y_eager = compiled(x_compiled), torch.nn.MaxPool2d(3, 2, 1)(x_eager)
    assert torch.equal(y_compiled, y_eager)
    grad = Inputs(10).randn(*y_eager.shape)
    y_compiled.backward(grad)
    y_eager.backward(grad)
    assert torch.equal(x_compiled.grad, x_eager.grad)


# Pools split their work by the thread count (the grain is a few microseconds of work), and a
# split must not change a bit: ties, overlapping windows and gradients that several windows add
# into an input element included.
THREAD_CASES = [(2, (1, 16, 28, 28), 3, 1, 1), (2, (2, 8, 30, 30), 3, 2, 1), (2, (3, 40, 9, 9), 2, 2, 0),
                (3, (1, 4, 10, 12, 14), 3, 1, 1), (1, (4, 16, 300), 4, 1, 2)]


@pytest.mark.parametrize("dims, shape, kernel, stride, padding, channels_last",
                         [(*case, layout) for case in THREAD_CASES for layout in (False, True)
                          if case[0] > 1 or not layout], ids=lambda v: str(v))
def test_same_bits_on_any_thread_count(dims, shape, kernel, stride, padding, channels_last):
    x = _values(*shape, dtype=torch.float32)
    x = x.masked_fill(torch.isnan(x), 0.0)  # NaN gradients would hide differences
    if channels_last:
        x = x.to(memory_format=CHANNELS_LAST[dims])
    grad_output = None
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            x_tracked = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
            output, indices = SEQKERN_POOLS[dims](x_tracked, kernel, stride, padding, return_indices=True)
            if grad_output is None:
                grad_output = Inputs(5).randn(*output.shape, dtype=torch.float32)
            output.backward(grad_output)
            results.append((output.detach(), indices, x_tracked.grad))
    finally:
        torch.set_num_threads(previous)
    for threads, result in zip((2, 3), results[1:]):
        for name, tensor, expected in zip(("output", "indices", "grad"), result, results[0]):
            assert torch.equal(tensor, expected), f"{name} on {threads} threads"
