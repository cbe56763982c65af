"""Every max-pool backend (C++, Triton under the interpreter, the NumPy reference adapter)
against the NumPy reference and against torch, through the backend contract of
seqkern/ops/pooling.py: forward values and indices exact, float64 gradients exact."""
import math
from typing import NamedTuple, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import TOLERANCES, Inputs, assert_close

import seqkern._C
from seqkern import reference
from seqkern.kernels import pooling as triton_pooling
from seqkern.ops import _reference_backend

BACKENDS = {"cpp": seqkern._C, "triton": triton_pooling, "reference": _reference_backend}
LAYOUTS = {4: torch.channels_last, 5: torch.channels_last_3d}


class Case(NamedTuple):
    name: str
    shape: Tuple[int, ...]
    kernel: Tuple[int, ...]
    stride: Tuple[int, ...]
    dilation: Tuple[int, ...]
    padding: Tuple[Tuple[int, int], ...]
    ceil_mode: bool = False
    pad_value: float = -math.inf

    @property
    def torch_padding(self):
        """The symmetric padding torch can express, or None."""
        if any(before != after for before, after in self.padding) or self.pad_value != -math.inf:
            return None
        if any(before > k // 2 for (before, _), k in zip(self.padding, self.kernel)):
            return None
        return tuple(before for before, _ in self.padding)


CASES = [
    Case("1d_k3_s2_p1_ceil", (3, 5, 17), (3,), (2,), (1,), ((1, 1),), ceil_mode=True),
    Case("1d_k4_s1_d2_overlap", (2, 3, 16), (4,), (1,), (2,), ((2, 2),)),
    Case("1d_asymmetric_pad0", (2, 2, 9), (3,), (2,), (1,), ((0, 2),), pad_value=0.0),
    Case("2d_k3_s2_p1", (2, 3, 11, 13), (3, 3), (2, 2), (1, 1), ((1, 1), (1, 1))),
    Case("2d_rect_dilated_ceil", (3, 2, 9, 8), (2, 3), (1, 2), (2, 1), ((1, 1), (1, 1)), ceil_mode=True),
    Case("2d_k3_s3_ceil_edge", (1, 5, 7, 7), (3, 3), (3, 3), (1, 1), ((0, 0), (0, 0)), ceil_mode=True),
    Case("2d_k2_s1_overlap", (2, 3, 5, 6), (2, 2), (1, 1), (1, 1), ((0, 0), (0, 0))),
    Case("2d_explicit_pad_value", (2, 3, 7, 5), (3, 2), (2, 1), (1, 2), ((0, 2), (1, 0)), pad_value=-0.5),
    Case("2d_same_pad0_ceil", (1, 3, 5, 5), (2, 2), (2, 1), (1, 1), ((0, 1), (0, 1)), ceil_mode=True,
         pad_value=0.0),
    Case("3d_k3_s2_p1_ceil", (2, 2, 5, 6, 7), (3, 3, 3), (2, 2, 2), (1, 1, 1), ((1, 1),) * 3, ceil_mode=True),
    Case("3d_mixed", (1, 3, 4, 5, 6), (2, 3, 2), (1, 2, 1), (1, 1, 2), ((1, 1), (0, 0), (1, 1))),
    Case("3d_large_pad_value", (1, 2, 3, 4, 5), (2, 2, 2), (2, 2, 2), (1, 1, 1), ((1, 2), (0, 1), (2, 2)),
         pad_value=1.5),
]
CASE_IDS = [case.name for case in CASES]


def _layouts(case):
    rank = len(case.shape)
    return ["contiguous"] + (["channels_last"] if rank in LAYOUTS else [])


def _input(case, layout, dtype=torch.float64, seed=0):
    """Values on a coarse grid (ties), with some -inf and NaN, in the requested layout."""
    x = (Inputs(seed + 1).randn(*case.shape, dtype=torch.float64) * 2).round()
    flat = x.view(-1)
    flat[::7] = -math.inf
    flat[5::23] = math.nan
    x = x.to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=LAYOUTS[len(case.shape)])
    return x


def _arguments(case):
    return list(case.kernel), list(case.stride), list(case.dilation), [list(p) for p in case.padding]


def _reference(case, x):
    output, indices = reference.max_pool_forward(
        x.double().numpy(), case.kernel, case.stride, case.dilation, case.padding, case.ceil_mode, case.pad_value
    )
    return torch.from_numpy(output), torch.from_numpy(indices)


def _assert_same_values(actual, expected):
    torch.testing.assert_close(actual.double(), expected.double(), rtol=0, atol=0, equal_nan=True)


def _params():
    return [pytest.param(name, case, layout, id=f"{name}-{case.name}-{layout}")
            for name in BACKENDS for case in CASES for layout in _layouts(case)]


@pytest.mark.parametrize("backend, case, layout", _params())
def test_forward_matches_reference(backend, case, layout):
    x = _input(case, layout)
    output, indices = BACKENDS[backend].max_pool_forward(x, *_arguments(case), case.ceil_mode, case.pad_value, torch.int64)
    expected_output, expected_indices = _reference(case, x)
    _assert_same_values(output, expected_output)
    assert torch.equal(indices, expected_indices)
    if backend != "reference":
        assert output.is_contiguous(memory_format=torch.contiguous_format if layout == "contiguous"
                                    else LAYOUTS[x.dim()])
        assert indices.stride() == output.stride()


@pytest.mark.parametrize("backend, case, layout", _params())
def test_forward_without_indices(backend, case, layout):
    x = _input(case, layout)
    output, indices = BACKENDS[backend].max_pool_forward(x, *_arguments(case), case.ceil_mode, case.pad_value, None)
    _assert_same_values(output, _reference(case, x)[0])
    assert indices.shape == (0,)


@pytest.mark.parametrize("backend, case, layout",
                         [p for p in _params() if p.values[1].torch_padding is not None])
def test_forward_matches_torch(backend, case, layout):
    x = _input(case, layout, dtype=torch.float32)
    pool = {3: F.max_pool1d, 4: F.max_pool2d, 5: F.max_pool3d}[x.dim()]
    expected_output, expected_indices = pool(x, case.kernel, case.stride, case.torch_padding, case.dilation,
                                             case.ceil_mode, return_indices=True)
    output, indices = BACKENDS[backend].max_pool_forward(x, *_arguments(case), case.ceil_mode, case.pad_value, torch.int64)
    _assert_same_values(output, expected_output)
    assert torch.equal(indices, expected_indices)


@pytest.mark.parametrize("backend, case, layout", _params())
def test_backward_float64_matches_reference(backend, case, layout):
    x = _input(case, layout)
    _, indices = _reference(case, x)
    grad_output = Inputs(3).randn(*indices.shape)
    if layout == "channels_last":
        grad_output = grad_output.contiguous(memory_format=LAYOUTS[x.dim()])
        indices = indices.contiguous(memory_format=LAYOUTS[x.dim()])
    grad_input = BACKENDS[backend].max_pool_backward(grad_output, indices, list(x.shape), *_arguments(case))
    expected = reference.max_pool_backward(grad_output.numpy(), indices.numpy(), x.shape)
    assert torch.equal(grad_input, torch.from_numpy(expected))


@pytest.mark.parametrize("backend", ["cpp", "triton"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", [c for c in CASES if c.torch_padding is not None], ids=lambda c: c.name)
def test_backward_matches_torch(backend, dtype, case):
    """Gradients against torch: bit-identical in float64, per the table in float32."""
    x = Inputs(4).randn(*case.shape, dtype=dtype, requires_grad=True)
    pool = {3: F.max_pool1d, 4: F.max_pool2d, 5: F.max_pool3d}[x.dim()]
    output, indices = pool(x, case.kernel, case.stride, case.torch_padding, case.dilation, case.ceil_mode, True)
    grad_output = Inputs(5).randn(*output.shape, dtype=dtype)
    output.backward(grad_output)
    grad_input = BACKENDS[backend].max_pool_backward(grad_output, indices, list(x.shape), *_arguments(case))
    if dtype == torch.float64:
        assert torch.equal(grad_input, x.grad)
    else:
        assert_close(grad_input, x.grad)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
@pytest.mark.parametrize("case", [CASES[3], CASES[7], CASES[9]], ids=lambda c: c.name)
def test_bfloat16_against_reference(backend, case):
    """Maxima are exact in any dtype; bf16 gradients are summed in fp32 and rounded once."""
    x = _input(case, "contiguous", dtype=torch.bfloat16)
    output, indices = BACKENDS[backend].max_pool_forward(x, *_arguments(case), case.ceil_mode, case.pad_value, torch.int64)
    expected_output, expected_indices = _reference(case, x)
    _assert_same_values(output, expected_output)
    assert torch.equal(indices, expected_indices)
    grad_output = Inputs(6).randn(*indices.shape, dtype=torch.bfloat16)
    grad_input = BACKENDS[backend].max_pool_backward(grad_output, indices, list(x.shape), *_arguments(case))
    expected = reference.max_pool_backward(grad_output.double().numpy(), indices.numpy(), x.shape)
    assert grad_input.dtype == torch.bfloat16
    assert_close(grad_input, torch.from_numpy(expected), dtype=torch.bfloat16)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.uint8, torch.int64])
def test_integer_forward(backend, dtype):
    case = CASES[3]
    info = torch.iinfo(dtype)
    x = torch.randint(max(info.min, -100), min(info.max, 100), case.shape, generator=torch.Generator().manual_seed(7),
                      dtype=dtype)
    x.view(-1)[::5] = info.min
    output, indices = BACKENDS[backend].max_pool_forward(x, *_arguments(case), case.ceil_mode, case.pad_value, torch.int64)
    expected_output, expected_indices = F.max_pool2d(x.double(), case.kernel, case.stride, case.torch_padding,
                                                     case.dilation, case.ceil_mode, return_indices=True)
    assert output.dtype == dtype
    assert torch.equal(output, expected_output.to(dtype))
    assert torch.equal(indices, expected_indices)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[9]], ids=lambda c: c.name)
def test_empty_batch(backend, case):
    x = torch.empty((0, *case.shape[1:]), dtype=torch.float64)
    output, indices = BACKENDS[backend].max_pool_forward(x, *_arguments(case), case.ceil_mode, case.pad_value, torch.int64)
    assert output.shape[0] == 0 and indices.shape == output.shape
    assert output.shape[2:] == _reference(case, _input(case, "contiguous"))[0].shape[2:]
    grad_input = BACKENDS[backend].max_pool_backward(torch.empty_like(output), indices, list(x.shape),
                                                     *_arguments(case))
    assert grad_input.shape == x.shape


def test_tolerance_table_covers_the_tested_dtypes():
    assert {torch.float64, torch.float32, torch.bfloat16} <= set(TOLERANCES)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_window_without_an_inbounds_position(backend):
    """torch returns an index outside the plane here (2 for a length-2 plane); every
    seqkern backend returns -inf with index -1, and that gradient goes nowhere."""
    x = torch.tensor([[[3.0, 4.0]]], dtype=torch.float64)
    args = ([2], [1], [3], [(1, 1)])
    output, indices = BACKENDS[backend].max_pool_forward(x, *args, False, -math.inf, torch.int64)
    assert output.tolist() == [[[-math.inf]]] and indices.tolist() == [[[-1]]]
    expected = reference.max_pool_forward(x.numpy(), (2,), (1,), (3,), ((1, 1),), False, -math.inf)
    assert np.array_equal(expected[1], indices.numpy())
    grad = BACKENDS[backend].max_pool_backward(torch.ones_like(output), indices, [1, 1, 2], *args)
    assert grad.tolist() == [[[0.0, 0.0]]]


def test_cpp_kernels_reject_bad_arguments_as_the_op_does():
    """The raw kernels (seqkern._C, what SEQKERN_BACKEND=cpp runs) check their arguments with the
    op's exception types and messages; only an index outside its plane, which only the data
    shows, is a RuntimeError of their own."""
    x = torch.randn(1, 2, 5, 5)
    cases = [
        (dict(kernel_size=[0, 2]), ValueError, r"kernel_size must be positive, got \[0, 2\]"),
        (dict(kernel_size=[2]), ValueError, r"kernel_size needs 2 entries for a 2-d pool, got \[2\]"),
        (dict(kernel_size=[7, 2]), ValueError,
         r"input of shape \(1, 2, 5, 5\) gives output size \(-1, 4\), which is too small"),
        (dict(pad_value=math.nan), ValueError, "pad_value must not be NaN"),
        (dict(input=x.to(torch.int8), padding=[(1, 1), (0, 0)], pad_value=0.5), ValueError,
         "pad_value 0.5 is not a value of the input dtype torch.int8"),
        (dict(index_dtype=torch.int16), ValueError, "index_dtype must be torch.int64, torch.int32 or None"),
        (dict(input=x.to(torch.complex64)), NotImplementedError, "dtype torch.complex64 is not supported"),
    ]
    for change, error, message in cases:
        args = {**dict(input=x, kernel_size=[2, 2], stride=[1, 1], dilation=[1, 1], padding=[(0, 0), (0, 0)],
                       ceil_mode=False, pad_value=-math.inf, index_dtype=None), **change}
        with pytest.raises(error, match="^seqkern max_pool: " + message):
            seqkern._C.max_pool_forward(*args.values())
    output, indices = seqkern._C.max_pool_forward(x, [2, 2], [2, 2], [1, 1], [(0, 0), (0, 0)], False, -math.inf,
                                                  torch.int64)
    grad = torch.ones_like(output)
    with pytest.raises(RuntimeError, match="outside a plane of 25"):
        seqkern._C.max_pool_backward(grad, indices + 25, list(x.shape), [2, 2], [2, 2], [1, 1], [(0, 0), (0, 0)])
    with pytest.raises(ValueError, match="^seqkern max_pool_backward: indices must be int64 or int32, got torch.int16"):
        seqkern._C.max_pool_backward(grad, indices.short(), list(x.shape), [2, 2], [2, 2], [1, 1], [(0, 0), (0, 0)])
    with pytest.raises(ValueError, match=r"^seqkern max_pool_backward: stride must be positive, got \[2, 0\]"):
        seqkern._C.max_pool_backward(grad, indices, list(x.shape), [2, 2], [2, 0], [1, 1], [(0, 0), (0, 0)])


@pytest.mark.parametrize("backend, case, layout", [p for p in _params() if p.values[1].name in
                                                   ("1d_k4_s1_d2_overlap", "2d_explicit_pad_value", "3d_mixed")])
def test_int32_indices_forward_and_backward(backend, case, layout):
    """int32 indices (kept only for backward) carry the same offsets as int64 ones."""
    x = _input(case, layout)
    output, indices = BACKENDS[backend].max_pool_forward(x, *_arguments(case), case.ceil_mode, case.pad_value,
                                                         torch.int32)
    expected_output, expected_indices = _reference(case, x)
    _assert_same_values(output, expected_output)
    assert indices.dtype == torch.int32 and torch.equal(indices.long(), expected_indices)
    grad_output = Inputs(3).randn(*indices.shape).contiguous(memory_format=torch.contiguous_format if layout ==
                                                             "contiguous" else LAYOUTS[x.dim()])
    grad_input = BACKENDS[backend].max_pool_backward(grad_output, indices, list(x.shape), *_arguments(case))
    expected = reference.max_pool_backward(grad_output.numpy(), expected_indices.numpy(), x.shape)
    assert torch.equal(grad_input, torch.from_numpy(expected))


# channels_last with C = 70: the C++ forward passes over a window's taps once per block of
# channel vectors (64 float32 or 32 float64 channels with AVX-512, half that with AVX2),
# then once per vector of the tail; the padded taps compete (finite pad_value) in both.
WIDE_CHANNEL_CASES = [
    Case("2d_wide_k3_s2_pad_value_ceil", (2, 70, 7, 6), (3, 3), (2, 2), (1, 1), ((1, 1), (1, 1)), ceil_mode=True,
         pad_value=-0.5),
    Case("3d_wide_mixed", (1, 70, 3, 4, 5), (2, 2, 2), (1, 2, 1), (1, 1, 2), ((0, 1), (1, 0), (1, 1))),
]


@pytest.mark.parametrize("backend", ["cpp", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("index_dtype", [None, torch.int32, torch.int64])
@pytest.mark.parametrize("case", WIDE_CHANNEL_CASES, ids=lambda c: c.name)
def test_channels_last_wide_channels_match_reference(backend, case, dtype, index_dtype):
    x = _input(case, "channels_last", dtype=dtype)
    output, indices = BACKENDS[backend].max_pool_forward(x, *_arguments(case), case.ceil_mode, case.pad_value,
                                                         index_dtype)
    expected_output, expected_indices = _reference(case, x)
    _assert_same_values(output, expected_output)
    assert output.is_contiguous(memory_format=LAYOUTS[x.dim()])
    if index_dtype is None:
        assert indices.shape == (0,)
    else:
        assert indices.dtype == index_dtype and torch.equal(indices.long(), expected_indices)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("case", WIDE_CHANNEL_CASES, ids=lambda c: c.name)
def test_channels_last_wide_channels_backward_matches_reference(backend, case, dtype, index_dtype):
    """The C++ backward adds float32 gradients with int32 indices 16 channels at a time
    (AVX-512 gather and scatter), the rest channel by channel."""
    x = _input(case, "channels_last", dtype=dtype)
    _, indices = _reference(case, x)
    layout = LAYOUTS[x.dim()]
    grad_output = Inputs(4).randn(*indices.shape, dtype=dtype).contiguous(memory_format=layout)
    indices = indices.to(index_dtype).contiguous(memory_format=layout)
    grad_input = BACKENDS[backend].max_pool_backward(grad_output, indices, list(x.shape), *_arguments(case))
    expected = reference.max_pool_backward(grad_output.double().numpy(), indices.long().numpy(), x.shape)
    assert grad_input.is_contiguous(memory_format=layout)
    assert_close(grad_input, torch.from_numpy(expected), dtype=dtype)


@pytest.mark.parametrize("channel", [3, 69])
def test_cpp_channels_last_backward_rejects_an_index_past_the_plane(channel):
    """In a whole vector of channels (3) and in the tail (69) alike."""
    case = WIDE_CHANNEL_CASES[0]
    x = _input(case, "channels_last", dtype=torch.float32)
    _, indices = _reference(case, x)
    indices = indices.to(torch.int32).contiguous(memory_format=torch.channels_last)
    plane = x.shape[2] * x.shape[3]
    indices[0, channel, 1, 1] = plane + 5
    grad_output = torch.ones(indices.shape).contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="outside a plane"):
        seqkern._C.max_pool_backward(grad_output, indices, list(x.shape), *_arguments(case))
