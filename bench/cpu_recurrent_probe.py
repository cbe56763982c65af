"""Quick timing of the C++ recurrent layer against torch.nn on CPU, for kernel work.

Not the benchmark report (bench/report.py): a probe to see, within one process, how
seqkern's layer call compares with torch.nn's on the shapes of issue 3. Torch and seqkern
calls are interleaved and each reported time is a median, so load from other processes
hits both alike; read the ratios, not the absolute times. On a loaded machine the
minimum (also printed) is the steadier estimate of the uncontended time, and samples of
single calls (--min-seconds 0.001) interleave best. --kernel-only times seqkern._C's
forward and backward without the op's Python wrapper and autograd, to tell the two apart.

    python -m bench.cpu_recurrent_probe                      # every shape, cell and mode
    python -m bench.cpu_recurrent_probe --cells lstm --shapes 1x64 64x512 --modes training
    python -m bench.cpu_recurrent_probe --min-seconds 0.001 --repeats 41 --kernel-only
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import seqkern  # noqa: F401  (registers torch.ops.seqkern)

STEPS = 100
SHAPES = ("1x64", "1x128", "16x64", "16x128", "64x512")  # BxH, with I = H
MODULES = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
CELL_NAMES = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh"}


def seqkern_layer(module: torch.nn.Module, cell: str):
    """The seqkern op on the torch module's own weights, output and states like torch.nn."""
    weights = (module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0)
    is_lstm = cell == "lstm"

    def run(x):
        h0 = x.new_zeros(x.shape[1], module.hidden_size)
        c0 = h0 if is_lstm else None
        output, h_n, c_n, _ = torch.ops.seqkern.recurrent_layer(x, h0, c0, *weights, None, None, None,
                                                                CELL_NAMES[cell], False)
        return output, h_n
    return run


def kernel_step(module: torch.nn.Module, cell: str, x: torch.Tensor, training: bool):
    """seqkern._C's forward (and backward of output.sum()) on the module's weights."""
    from seqkern import _C

    weights = [p.detach() for p in (module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0,
                                    module.bias_hh_l0)]
    x = x.detach()
    h0 = x.new_zeros(x.shape[1], module.hidden_size)
    c0 = h0 if cell == "lstm" else None
    name = CELL_NAMES[cell]
    grad_output = torch.ones(x.shape[0], x.shape[1], module.hidden_size)

    def run():
        output, _, _, workspace = _C.recurrent_layer_forward(x, h0, c0, *weights, None, None, None, name, False)
        if training:
            _C.recurrent_layer_backward(grad_output, h0, c0, x, h0, c0, *weights, None, None, None, output,
                                        workspace, name, False, True, True)
    return run


def step(layer, x: torch.Tensor, parameters, training: bool):
    if not training:
        def infer():
            with torch.no_grad():
                layer(x)
        return infer

    def train():
        x.grad = None
        for parameter in parameters:
            parameter.grad = None
        output = layer(x)[0]
        output.sum().backward()
    return train


CLOCK = time.perf_counter


def seconds_per_call(function, calls: int) -> float:
    start = CLOCK()
    for _ in range(calls):
        function()
    return (CLOCK() - start) / calls


def compare(functions: dict, repeats: int, min_seconds: float) -> dict:
    for function in functions.values():
        function()
    calls = {name: max(1, int(min_seconds / max(seconds_per_call(f, 1), 1e-7))) for name, f in functions.items()}
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            samples[name].append(seconds_per_call(function, calls[name]))
    return {name: (statistics.median(values), min(values)) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=list(MODULES), choices=list(MODULES))
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), help="BxH (I = H)")
    parser.add_argument("--modes", nargs="+", default=["inference", "training"], choices=["inference", "training"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-seconds", type=float, default=0.05, help="time of one sample")
    parser.add_argument("--kernel-only", action="store_true",
                        help="time seqkern._C directly, without the op's wrapper and autograd")
    parser.add_argument("--cpu-clock", action="store_true",
                        help="time with this thread's CPU clock: blind to time lost to other processes, so "
                             "steadier on a busy machine, but only meaningful with --threads 1")
    args = parser.parse_args()
    if args.cpu_clock:
        if args.threads != 1:
            parser.error("--cpu-clock needs --threads 1")
        global CLOCK
        CLOCK = time.thread_time
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"T={STEPS}, float32, {torch.get_num_threads()} threads; ms per call; ratio = torch / seqkern")
    print(f"{'case':34s} {'median: torch':>13s} {'seqkern':>9s} {'ratio':>6s}   {'min: torch':>10s} {'seqkern':>9s} "
          f"{'ratio':>6s}")
    for cell in args.cells:
        for shape in args.shapes:
            batch, hidden = (int(v) for v in shape.split("x"))
            module = MODULES[cell](hidden, hidden)
            layer = seqkern_layer(module, cell)
            for mode in args.modes:
                training = mode == "training"
                x = torch.randn(STEPS, batch, hidden).requires_grad_(training)
                parameters = list(module.parameters())
                ours = kernel_step(module, cell, x, training) if args.kernel_only else step(layer, x, parameters,
                                                                                             training)
                times = compare({"torch": step(module, x, parameters, training), "seqkern": ours}, args.repeats,
                                args.min_seconds)
                columns = []
                for stat in (0, 1):
                    theirs, ours = times["torch"][stat], times["seqkern"][stat]
                    columns.append(f"{theirs * 1e3:9.3f} {ours * 1e3:9.3f} {theirs / ours:6.2f}")
                print(f"{cell + ' ' + mode + ' B=' + str(batch) + ' H=' + str(hidden):34s}     "
                      + "    ".join(columns), flush=True)


if __name__ == "__main__":
    main()
