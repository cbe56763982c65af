"""The NumPy max-pool reference: exactly torch's values and indices, the seeds' worked
example, the "same" padding rule, pad_value semantics, and its backward."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqkern import reference
from support import Inputs, assert_close

NAN, INF = float("nan"), float("inf")
TORCH_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}

# spatial shape, kernel, stride, symmetric padding, dilation, ceil_mode
TORCH_CASES = {
    "1d_pad": ((11,), (3,), (2,), (1,), (1,), False),
    "1d_dilated_ceil": ((10,), (3,), (2,), (1,), (2,), True),
    "1d_stride_below_kernel": ((9,), (4,), (1,), (2,), (1,), False),
    "1d_stride_above_kernel_ceil": ((10,), (2,), (3,), (0,), (1,), True),
    "2d_mixed_ceil": ((7, 9), (3, 2), (2, 1), (1, 1), (1, 2), True),
    "2d_stride_1": ((5, 6), (3, 3), (1, 1), (1, 1), (1, 1), False),
    "2d_dilated": ((8, 7), (2, 3), (3, 2), (0, 1), (2, 1), False),
    "2d_ceil_clipped_window": ((6, 5), (3, 2), (2, 2), (1, 1), (1, 1), True),
    "3d_mixed_ceil": ((5, 6, 7), (2, 3, 2), (2, 2, 1), (1, 1, 0), (1, 1, 2), True),
    "3d_plain": ((4, 5, 6), (2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1), False),
}


def torch_pool(x, kernel, stride, padding, dilation, ceil_mode):
    return TORCH_POOL[len(kernel)](x, kernel, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True)


def reference_pool(x, kernel, stride, padding, dilation, ceil_mode, pad_value=-INF):
    return reference.max_pool_forward(x.detach().numpy() if isinstance(x, torch.Tensor) else x, kernel, stride,
                                      dilation, tuple((p, p) for p in padding), ceil_mode, pad_value)


def assert_same_as_torch(x, kernel, stride, padding, dilation, ceil_mode):
    """Values and indices exactly, backward to float64 tolerance."""
    x = x.clone().requires_grad_(True)
    output, indices = torch_pool(x, kernel, stride, padding, dilation, ceil_mode)
    ref_output, ref_indices = reference_pool(x, kernel, stride, padding, dilation, ceil_mode)
    torch.testing.assert_close(torch.from_numpy(ref_output), output.detach(), rtol=0, atol=0, equal_nan=True)
    assert ref_indices.dtype == np.int64
    torch.testing.assert_close(torch.from_numpy(ref_indices), indices, rtol=0, atol=0)
    grad_output = Inputs(seed=5).randn(*output.shape)
    output.backward(grad_output)
    grad_input = reference.max_pool_backward(grad_output.numpy(), ref_indices, tuple(x.shape))
    assert_close(grad_input, x.grad, dtype=torch.float64)


@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_matches_torch_with_ties(case):
    spatial, kernel, stride, padding, dilation, ceil_mode = TORCH_CASES[case]
    # Small integers make many ties, so "first maximum wins" is exercised everywhere.
    x = torch.round(Inputs().randn(2, 3, *spatial, scale=1.5))
    assert_same_as_torch(x, kernel, stride, padding, dilation, ceil_mode)


@pytest.mark.parametrize("case", ["1d_dilated_ceil", "2d_mixed_ceil", "3d_mixed_ceil"])
def test_matches_torch_with_nan_and_infinities(case):
    """NaN wins (the last NaN of a window gives the index); all -inf windows give -inf and
    their first in-bounds position, with padding too."""
    spatial, kernel, stride, padding, dilation, ceil_mode = TORCH_CASES[case]
    x = Inputs().randn(2, 3, *spatial)
    flat = x.view(-1)
    flat[::7] = NAN
    flat[3::11] = NAN
    flat[1::5] = INF
    x[1] = -INF
    x[0, 1, ..., :2] = -INF
    assert_same_as_torch(x, kernel, stride, padding, dilation, ceil_mode)


def test_all_minus_inf_windows_match_torch():
    x = torch.full((1, 2, 3, 3), -INF, dtype=torch.float64)
    output, indices = reference_pool(x, (2, 2), (2, 2), (1, 1), (1, 1), False)
    expected_output, expected_indices = torch_pool(x, (2, 2), (2, 2), (1, 1), (1, 1), False)
    np.testing.assert_array_equal(output, expected_output.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    np.testing.assert_array_equal(indices[0, 0], [[0, 1], [3, 4]])


def test_empty_batch_matches_torch():
    x = torch.zeros((0, 3, 6, 5), dtype=torch.float64)
    output, indices = reference_pool(x, (2, 2), (2, 2), (1, 0), (1, 1), True)
    expected_output, _ = torch_pool(x, (2, 2), (2, 2), (1, 0), (1, 1), True)
    assert output.shape == tuple(expected_output.shape) == indices.shape
    assert reference.max_pool_backward(np.zeros(output.shape), indices, x.shape).shape == x.shape


# ---------------------------------------------------------------------------------------
# The seeds' worked example and "same" padding
# ---------------------------------------------------------------------------------------

SEEDS_INPUT = np.array([
    [1, 2, 3, 4, 5],
    [9, 8, 7, 6, 0],
    [0, 2, 4, 6, 8],
    [2, 3, 4, 5, 1],
    [6, 7, 8, 9, 0],
], dtype=np.float64)[None, None]


def same_pool(x, kernel, stride, pad_value):
    padding = tuple(reference.same_padding(length, k, s, 1) for length, k, s in zip(x.shape[2:], kernel, stride))
    return padding, reference.max_pool_forward(x, kernel, stride, (1,) * len(kernel), padding, False, pad_value)


def test_seeds_worked_example_stride_2_1():
    padding, (output, indices) = same_pool(SEEDS_INPUT, (2, 2), (2, 1), 0.0)
    assert padding == ((0, 1), (0, 1))
    np.testing.assert_array_equal(output[0, 0], [[9, 8, 7, 6, 5], [3, 4, 6, 8, 8], [7, 8, 9, 9, 0]])
    # The last output of row 3 ties the in-bounds 0 with padded zeros: the in-bounds one comes first.
    np.testing.assert_array_equal(indices[0, 0], [[5, 6, 7, 8, 4], [16, 12, 13, 14, 14], [21, 22, 23, 23, 24]])


def test_seeds_worked_example_stride_1_2():
    padding, (output, indices) = same_pool(SEEDS_INPUT, (2, 2), (1, 2), 0.0)
    assert padding == ((0, 1), (0, 1))
    # The notes give the first four rows; the fifth pools row 4 with the zero padding below.
    np.testing.assert_array_equal(output[0, 0], [[9, 7, 5], [9, 7, 8], [3, 6, 8], [7, 9, 1], [7, 9, 0]])
    np.testing.assert_array_equal(indices[0, 0], [[5, 7, 4], [5, 7, 14], [16, 13, 14], [21, 23, 19], [21, 23, 24]])


# length, kernel, stride, dilation -> (before, after), worked by hand from
# out = ceil(L / s), total = max((out - 1) s + (k - 1) d + 1 - L, 0), smaller half before.
SAME_CASES = {
    (5, 2, 2, 1): (0, 1),   # out 3, total 1
    (5, 2, 1, 1): (0, 1),   # out 5, total 1
    (7, 3, 2, 1): (1, 1),   # out 4, total 2
    (10, 3, 3, 2): (2, 2),  # out 4, total 4
    (8, 4, 1, 1): (1, 2),   # out 8, total 3
    (6, 1, 2, 1): (0, 0),   # out 3, total max(-1, 0)
    (2, 5, 1, 1): (2, 2),   # out 2, total 4: more padding than input
    (9, 3, 4, 3): (3, 3),   # out 3, total 6
    (9, 2, 4, 3): (1, 2),   # out 3, total 3
}


@pytest.mark.parametrize("arguments", list(SAME_CASES))
def test_same_padding_rule(arguments):
    length, kernel, stride, dilation = arguments
    before, after = reference.same_padding(length, kernel, stride, dilation)
    assert (before, after) == SAME_CASES[arguments]
    size = reference.max_pool_output_size(length, kernel, stride, dilation, before, after, False)
    assert size == -(-length // stride)


def test_output_size_rule_matches_torch():
    """floor / ceil rule, including the ceil_mode step back when the last window would
    start in the trailing padding."""
    assert reference.max_pool_output_size(5, 2, 2, 1, 0, 0, False) == 2
    assert reference.max_pool_output_size(5, 2, 2, 1, 0, 0, True) == 3
    assert reference.max_pool_output_size(5, 2, 2, 1, 1, 1, True) == 3  # 4 before the step back
    assert reference.max_pool_output_size(10, 3, 2, 2, 1, 1, True) == 5
    for length in range(3, 12):
        for kernel, stride, pad, dilation in ((2, 2, 1, 1), (3, 2, 1, 1), (3, 3, 1, 2), (4, 3, 2, 1)):
            for ceil_mode in (False, True):
                x = torch.zeros((1, 1, length), dtype=torch.float64)
                expected = F.max_pool1d(x, kernel, stride, pad, dilation, ceil_mode=ceil_mode).shape[-1]
                assert reference.max_pool_output_size(length, kernel, stride, dilation, pad, pad, ceil_mode) == \
                    expected, (length, kernel, stride, pad, dilation, ceil_mode)


# ---------------------------------------------------------------------------------------
# pad_value, per-side padding, backward
# ---------------------------------------------------------------------------------------

def test_finite_pad_value_maximum_gets_index_minus_one_and_no_gradient():
    x = -np.arange(1.0, 7.0).reshape(1, 1, 6)
    output, indices = reference.max_pool_forward(x, (2,), (2,), (1,), ((1, 1),), False, 0.0)
    np.testing.assert_array_equal(output[0, 0], [0, -2, -4, 0])
    np.testing.assert_array_equal(indices[0, 0], [-1, 1, 3, -1])
    grad_input = reference.max_pool_backward(np.ones(output.shape), indices, x.shape)
    np.testing.assert_array_equal(grad_input[0, 0], [0, 1, 0, 1, 0, 0])


def test_window_without_inbound_positions():
    x = np.array([[[3.0, 1.0, 2.0]]])
    for pad_value in (-INF, -7.0):
        output, indices = reference.max_pool_forward(x, (2,), (1,), (1,), ((3, 0),), False, pad_value)
        np.testing.assert_array_equal(output[0, 0], [pad_value, pad_value, 3, 3, 2])
        np.testing.assert_array_equal(indices[0, 0], [-1, -1, 0, 0, 2])


def test_per_side_padding_with_minus_inf_matches_cropped_torch():
    """Unequal sides with -inf padding equal torch's symmetric padding cropped on one side."""
    x = torch.round(Inputs().randn(2, 3, 7, 8, scale=1.5))
    output, indices = reference.max_pool_forward(x.numpy(), (3, 3), (1, 1), (1, 1), ((2, 0), (0, 2)), False, -INF)
    padded = F.pad(x, (0, 0, 2, 0), value=-INF)
    expected, _ = F.max_pool2d(F.pad(padded, (0, 2), value=-INF), 3, 1, 0, return_indices=True)
    np.testing.assert_array_equal(output, expected.numpy())
    assert indices.min() >= 0 and indices.max() < 7 * 8


@pytest.mark.parametrize("dims,pad_value", [(1, -INF), (2, -INF), (2, 0.25), (3, -INF)])
def test_backward_matches_finite_differences(dims, pad_value):
    spatial = {1: (9,), 2: (5, 6), 3: (3, 4, 5)}[dims]
    kernel, stride, dilation = (3, 2, 2)[:dims], (2, 1, 2)[:dims], (1, 2, 1)[:dims]
    padding = ((1, 0), (0, 1), (1, 1))[:dims]
    inputs = Inputs()
    # A permutation scaled apart: no ties, and no value within eps of another.
    x = (np.random.default_rng(3).permutation(2 * 2 * int(np.prod(spatial))) * 0.1 - 1.0).reshape((2, 2) + spatial)
    output, indices = reference.max_pool_forward(x, kernel, stride, dilation, padding, True, pad_value)
    weights = inputs.randn(*output.shape).numpy()
    analytic = reference.max_pool_backward(weights, indices, x.shape)
    eps = 1e-6
    numeric = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + eps
        up = (reference.max_pool_forward(x, kernel, stride, dilation, padding, True, pad_value)[0] * weights).sum()
        x[index] = original - eps
        down = (reference.max_pool_forward(x, kernel, stride, dilation, padding, True, pad_value)[0] * weights).sum()
        x[index] = original
        numeric[index] = (up - down) / (2 * eps)
    assert np.abs(analytic).max() > 0.1
    assert np.abs(analytic - numeric).max() <= 1e-6 * np.abs(analytic).max()


def test_bad_arguments_are_clear_errors():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="kernel_size needs 2 entries"):
        reference.max_pool_forward(x, (2,), (2, 2), (1, 1), ((0, 0), (0, 0)), False, -INF)
    with pytest.raises(ValueError, match="stride must be positive"):
        reference.max_pool_forward(x, (2, 2), (0, 2), (1, 1), ((0, 0), (0, 0)), False, -INF)
    with pytest.raises(ValueError, match="padding must be non-negative"):
        reference.max_pool_forward(x, (2, 2), (2, 2), (1, 1), ((0, -1), (0, 0)), False, -INF)
    with pytest.raises(ValueError, match="too small"):
        reference.max_pool_forward(x, (5, 5), (1, 1), (1, 1), ((0, 0), (0, 0)), False, -INF)
    with pytest.raises(ValueError, match="1 to 3 spatial axes"):
        reference.max_pool_forward(np.zeros((1, 1, 2, 2, 2, 2)), (1,) * 4, (1,) * 4, (1,) * 4, ((0, 0),) * 4,
                                   False, -INF)
