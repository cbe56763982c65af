"""The C++ kernels' cache of large buffers (csrc/memory.cpp): the memory of a large result
goes back to the cache when the tensor dies and the next result of a close size reuses it,
so every kernel must write all of each result whatever the memory held before."""
import pytest
import torch

import seqkern
from seqkern import _C
from support import Inputs

# Past the cache's 128 KiB floor in float32: workspace (T, B, 5 H) is 439 KB.
STEPS, BATCH, INPUT, HIDDEN = 40, 9, 33, 61
LENGTHS = [40, 3, 0, 17, 40, 1, 39, 22, 5]


@pytest.fixture
def cache():
    """An empty cache before the test and after it."""
    _C.release_large_buffers()
    yield
    _C.release_large_buffers()


def lstm_call(seed, lengths):
    """A reverse LSTM layer's forward and backward results, in float32."""
    inputs = Inputs(seed)

    def draw(*shape, scale=1.0):
        return inputs.randn(*shape, scale=scale, dtype=torch.float32)

    rows, scale = 4 * HIDDEN, HIDDEN ** -0.5
    x, h0, c0 = draw(STEPS, BATCH, INPUT), draw(BATCH, HIDDEN), draw(BATCH, HIDDEN)
    weights = (draw(rows, INPUT, scale=scale), draw(rows, HIDDEN, scale=scale), draw(rows, scale=scale),
               draw(rows, scale=scale))
    lengths = None if lengths is None else torch.tensor(lengths)
    forward = _C.recurrent_layer_forward(x, h0, c0, *weights, None, None, lengths, "lstm", True)
    grads = (draw(STEPS, BATCH, HIDDEN), draw(BATCH, HIDDEN), draw(BATCH, HIDDEN))
    backward = _C.recurrent_layer_backward(*grads, x, h0, c0, *weights, None, None, lengths, forward[0], forward[3],
                                           "lstm", True, True, True)
    return (*forward, *backward)


def pool_call(seed):
    """A 2-d max pool's output, indices and input gradient, in float32 (each past 128 KiB)."""
    x = Inputs(seed).randn(4, 8, 41, 40, dtype=torch.float32)
    geometry = ([3, 3], [1, 1], [1, 1], [[1, 1], [1, 1]])
    output, indices = _C.max_pool_forward(x, *geometry, False, float("-inf"), torch.int64)
    grad_output = Inputs(seed + 1).randn(*output.shape, dtype=torch.float32)
    return output, indices, _C.max_pool_backward(grad_output, indices, list(x.shape), *geometry)


def poison_cache(results):
    """Fills each result with NaN (or -1) and lets it die: the cache then holds memory
    where any value a kernel fails to write shows."""
    for tensor in results:
        tensor.fill_(float("nan") if tensor.dtype.is_floating_point else -1)
    recycled = {tensor.data_ptr() for tensor in results if tensor.numel()}
    results.clear()
    return recycled


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "uneven_lengths"])
def test_recurrent_results_do_not_depend_on_recycled_memory(lengths, cache):
    expected = [tensor.clone() for tensor in lstm_call(1, lengths)]
    recycled = poison_cache(list(lstm_call(2, None)))
    actual = lstm_call(1, lengths)
    assert any(tensor.data_ptr() in recycled for tensor in actual), "no result reused a cached buffer"
    for index, (a, e) in enumerate(zip(actual, expected)):
        assert torch.equal(a, e), f"result {index}"


def test_pool_results_do_not_depend_on_recycled_memory(cache):
    expected = [tensor.clone() for tensor in pool_call(1)]
    recycled = poison_cache(list(pool_call(2)))
    actual = pool_call(1)
    assert {tensor.data_ptr() for tensor in actual} <= recycled, "every result should reuse a cached buffer"
    for index, (a, e) in enumerate(zip(actual, expected)):
        assert torch.equal(a, e), f"result {index}"


def test_dead_results_are_cached_and_released(cache):
    assert _C._large_buffer_cache() == (0, 0)
    results = list(pool_call(1))
    sizes = sum(tensor.nbytes for tensor in results)
    results.clear()
    held, blocks = _C._large_buffer_cache()
    assert blocks == 3 and held >= sizes
    assert seqkern.release_cpu_buffers() == held
    assert _C._large_buffer_cache() == (0, 0)


def test_small_results_are_not_cached(cache):
    x = Inputs(0).randn(1, 2, 8, 8, dtype=torch.float32)
    results = _C.max_pool_forward(x, [2, 2], [2, 2], [1, 1], [[0, 0], [0, 0]], False, float("-inf"), torch.int64)
    del results
    assert _C._large_buffer_cache() == (0, 0)


def test_recycled_results_resize_like_any_tensor(cache):
    output = pool_call(1)[0]
    values = output.clone()
    output.resize_(2 * output.numel())
    assert torch.equal(output[:values.numel()], values.flatten())


def test_cache_holds_at_most_256_mib(cache):
    results = [torch.empty(0)] * 3
    for index in range(3):
        x = torch.zeros(100 * 2 ** 20 // 4 + index)  # 100 MiB each, of float32
        results[index] = _C.max_pool_forward(x.view(1, 1, -1), [1], [1], [1], [[0, 0]], False, float("-inf"),
                                              None)[0]
    results.clear()
    held, blocks = _C._large_buffer_cache()
    assert held <= 256 * 2 ** 20 and blocks == 2
