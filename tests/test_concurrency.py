"""Several Python threads calling seqkern at once, as a server's worker threads share one
model: the ops release the GIL, so calls overlap, each with its own OpenMP team and buffers
from the shared cache (csrc/memory.h). Each call must give the bits of the same call run
alone."""
import functools
import threading

import pytest
import torch
from support import Inputs

import seqkern
import seqkern.functional as SF

THREADS = 4
ROUNDS = 3


def run_concurrently(calls):
    """Runs each call ROUNDS times, all calls at once from their own threads; returns each
    call's results of every round."""
    results = [[] for _ in calls]
    errors = []
    start = threading.Barrier(len(calls))

    def work(index):
        try:
            start.wait()
            for _ in range(ROUNDS):
                results[index].append(calls[index]())
        except Exception as error:  # re-raised on the main thread below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def assert_same_bits(results, expected):
    for thread, (rounds, wanted) in enumerate(zip(results, expected)):
        assert len(rounds) == ROUNDS
        for round_index, got in enumerate(rounds):
            assert len(got) == len(wanted)
            for position, (tensor, wanted_tensor) in enumerate(zip(got, wanted)):
                assert torch.equal(tensor, wanted_tensor), f"thread {thread}, round {round_index}, result {position}"


def assert_threads_match_serial(run, inputs):
    """run(x) -> tensors, for each x at once from its own thread, ROUNDS times, against the
    same calls made one after another first."""
    calls = [functools.partial(run, x) for x in inputs]
    expected = [call() for call in calls]
    assert_same_bits(run_concurrently(calls), expected)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_recurrent_training_steps_on_threads_match_serial(kind, monkeypatch):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    torch.manual_seed(3)
    # The workspace (T * B * up to 5H floats) is over 128 KiB: it comes from the shared cache.
    layer = getattr(seqkern.nn, kind)(24, 37, num_layers=2, bidirectional=True).float()
    source = Inputs()
    xs = [source.randn(41, 19, 24, dtype=torch.float32) for _ in range(THREADS)]

    def step(x):
        x_tracked = x.detach().requires_grad_(True)
        output, _ = layer(x_tracked)
        grads = torch.autograd.grad(output.square().sum(), [x_tracked, *layer.parameters()])
        return [output.detach().clone(), *(grad.clone() for grad in grads)]

    assert_threads_match_serial(step, xs)


def test_cells_on_threads_match_serial(monkeypatch):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    torch.manual_seed(4)
    cell = seqkern.nn.LSTMCell(24, 37).float()
    source = Inputs()
    xs = [source.randn(12, 19, 24, dtype=torch.float32) for _ in range(THREADS)]

    def decode(x):
        with torch.no_grad():
            state = None
            outputs = []
            for x_t in x:
                state = cell(x_t, state)
                outputs.append(state[0])
            return [torch.stack(outputs), state[1]]

    assert_threads_match_serial(decode, xs)


def test_pools_on_threads_match_serial(monkeypatch):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    source = Inputs()
    # 256 KiB inputs and outputs over 128 KiB: cached blocks, several threads per pool.
    xs = [source.randn(4, 16, 32, 32, dtype=torch.float32) for _ in range(THREADS)]

    def pool(x):
        x_tracked = x.detach().requires_grad_(True)
        output, indices = SF.max_pool2d(x_tracked, 3, 1, 1, return_indices=True)
        (grad,) = torch.autograd.grad(output.square().sum(), x_tracked)
        # Copies: the kernel's blocks go back to the cache for the next call to take.
        return [output.detach().clone(), indices.clone(), grad.clone()]

    assert_threads_match_serial(pool, xs)
