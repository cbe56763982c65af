"""pytest-benchmark suite (`pytest bench/ --benchmark-only`): the `make bench` default grid,
torch and seqkern side by side per case (one benchmark group per case).

SEQKERN_BENCH_THREADS sets the torch / OpenMP threads (default 2, as `make bench`)."""
import os

import torch


def pytest_configure(config):
    torch.set_num_threads(int(os.environ.get("SEQKERN_BENCH_THREADS", "2")))
