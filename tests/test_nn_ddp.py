"""seqkern.nn.LSTM under DistributedDataParallel: two CPU processes (gloo) training on halves
of a batch get the gradients that one process gets on the whole batch."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import seqkern
from nn_support import require_backend
from support import Inputs, assert_close

WORLD_SIZE, STEPS = 2, 2


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = seqkern.nn.LSTM(5, 7, 2, bidirectional=True, dtype=torch.float64)
        self.linear = torch.nn.Linear(14, 3, dtype=torch.float64)

    def forward(self, x):
        return self.linear(self.lstm(x)[0])


def training_gradients(model, batches):
    """Per step, the gradients of all parameters, after which SGD updates the model."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    gradients = []
    for x, target in batches:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), target).backward()
        gradients.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
    return gradients


def batches():
    inputs = Inputs()
    return [(inputs.randn(4, 2 * WORLD_SIZE, 5), inputs.randn(4, 2 * WORLD_SIZE, 3)) for _ in range(STEPS)]


def worker(rank, port, result_path):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(Model())
        shard = slice(2 * rank, 2 * rank + 2)
        gradients = training_gradients(model, [(x[:, shard], t[:, shard]) for x, t in batches()])
        if rank == 0:
            torch.save(gradients, result_path)
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ddp_gradients_equal_single_process(tmp_path):
    require_backend("cpp")
    result_path = tmp_path / "gradients.pt"
    mp.spawn(worker, args=(free_port(), str(result_path)), nprocs=WORLD_SIZE, join=True)
    distributed = torch.load(result_path)
    torch.manual_seed(0)
    single = training_gradients(Model(), batches())
    assert len(distributed) == len(single) == STEPS
    for step_distributed, step_single in zip(distributed, single):
        for actual, expected in zip(step_distributed, step_single):
            assert_close(actual, expected)
