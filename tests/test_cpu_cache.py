"""The cache of large CPU buffers (csrc/memory.h): freed blocks come back to later calls,
dirty, and must give the same numbers as fresh memory; at most a fixed number of free
bytes is kept; seqkern.empty_cpu_cache() returns them."""
import pytest
import torch
import torch.nn.functional as F
from support import inputs

import seqkern
import seqkern._C as _C
import seqkern.functional as SF

MIB = 1 << 20


@pytest.fixture(autouse=True)
def empty_cache():
    seqkern.empty_cpu_cache()
    yield
    seqkern.empty_cpu_cache()


def _lstm_step(x, layer):
    """Outputs and gradients of one training step; every buffer of 128 KiB and up comes
    from the cache (the workspace, T * B * 5H floats, is 5 MiB here)."""
    x = x.detach().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    output, (h_n, c_n) = layer(x)
    (output.sum() + h_n.sum()).backward()
    return [output.detach().clone(), h_n.detach().clone(), c_n.detach().clone(), x.grad.clone()] + [
        p.grad.clone() for p in layer.parameters()
    ]


def test_reused_blocks_give_the_same_bits():
    source = inputs()
    layer = seqkern.nn.LSTM(64, 256).float()
    x = source.randn(64, 16, 64, dtype=torch.float32)
    fresh = _lstm_step(x, layer)
    assert _C._large_block_cache_bytes() >= 4 * MIB, "the step's freed buffers were not cached"
    cached = _C._large_block_cache_bytes()
    for _ in range(3):
        again = _lstm_step(x, layer)
        for a, e in zip(again, fresh):
            assert torch.equal(a, e)
    # The same sizes every step: the blocks go round, the cache does not grow.
    assert _C._large_block_cache_bytes() == cached


def test_empty_cpu_cache_returns_the_free_blocks():
    x = torch.randn(MIB)  # 4 MiB of float32
    y = SF.max_pool1d(x.view(1, 1, -1), 1)
    assert _C._large_block_cache_bytes() == 0
    del y
    assert _C._large_block_cache_bytes() >= 4 * MIB
    seqkern.empty_cpu_cache()
    assert _C._large_block_cache_bytes() == 0


def test_the_cache_keeps_at_most_its_limit():
    x = torch.randn(1, 1, MIB)
    count = _C._large_block_cache_limit // (4 * MIB) + 8
    outputs = [SF.max_pool1d(x, 1) for _ in range(count)]
    del outputs
    assert 0 < _C._large_block_cache_bytes() <= _C._large_block_cache_limit


def test_small_buffers_bypass_the_cache():
    x = torch.randn(1, 1, _C._large_block_min_bytes // 4 - 1)
    y = SF.max_pool1d(x, 1)
    del y
    assert _C._large_block_cache_bytes() == 0


def test_channels_last_outputs_from_the_cache():
    x = inputs().randn(2, 64, 256, 130, dtype=torch.float32).contiguous(memory_format=torch.channels_last)
    for _ in range(2):  # fresh, then reused
        y = SF.max_pool2d(x, 2)
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(y, F.max_pool2d(x, 2))
        del y
        assert _C._large_block_cache_bytes() >= 4 * MIB


def test_blocks_under_a_huge_page_are_whole_small_pages():
    # 75001 floats: 300004 bytes, which round up to 74 pages of 4 KiB.
    x = torch.randn(1, 1, 75001)
    assert 300004 >= _C._large_block_min_bytes
    y = SF.max_pool1d(x, 1)
    del y
    assert _C._large_block_cache_bytes() == 74 * 4096
    y = SF.max_pool1d(x, 1)  # takes the freed block back
    assert _C._large_block_cache_bytes() == 0
    assert torch.equal(y, x)


def test_a_request_takes_a_block_of_its_own_size():
    small = SF.max_pool1d(torch.randn(1, 1, 75001), 1)
    large = SF.max_pool1d(torch.randn(1, 1, MIB), 1)  # 4 MiB: two huge pages
    del small, large
    cached = _C._large_block_cache_bytes()
    assert cached == 74 * 4096 + 4 * MIB
    again = SF.max_pool1d(torch.randn(1, 1, MIB), 1)
    assert _C._large_block_cache_bytes() == 74 * 4096
    del again
    assert _C._large_block_cache_bytes() == cached
