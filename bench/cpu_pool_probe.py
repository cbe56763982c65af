"""CPU max-pool timing probe: seqkern vs torch.nn.functional.max_pool2d in the same run.

    .venv/bin/python -m bench.cpu_pool_probe [--rounds 11] [--threads 2] [--batch 32]

The issue's shapes: float32, N=32, C=64, 112x112, kernel 3 stride 2 padding 1 and kernel 2
stride 2, contiguous and channels_last. Each round times every case once, in turn
(interleaved, so that a noisy neighbour slows all of them alike); the report gives
medians, speed-ups over torch, and the forward's bandwidth (bytes read + written per
second) against a same-run tensor.clone() of the input.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import seqkern.functional as SF

CONFIGS = (("k3 s2 p1", 3, 2, 1), ("k2 s2 p0", 2, 2, 0))
LAYOUTS = (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last))


def _time_once(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _forward_backward(pool, x, kernel, stride, padding, grad):
    def run():
        x.grad = None
        pool(x, kernel, stride, padding).backward(grad)

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=112)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(args.batch, args.channels, args.size, args.size, generator=generator)

    cases = {}
    element = base.element_size()
    for layout_name, layout in LAYOUTS:
        x = base.contiguous(memory_format=layout)
        x_grad = x.clone().requires_grad_()
        for config_name, kernel, stride, padding in CONFIGS:
            out = F.max_pool2d(x, kernel, stride, padding)
            grad = torch.randn(out.shape, generator=generator).contiguous(memory_format=layout)
            key = (layout_name, config_name)
            cases[key + ("torch fwd",)] = lambda x=x, k=kernel, s=stride, p=padding: F.max_pool2d(x, k, s, p)
            cases[key + ("seqkern fwd",)] = lambda x=x, k=kernel, s=stride, p=padding: SF.max_pool2d(x, k, s, p)
            cases[key + ("torch fwd+bwd",)] = _forward_backward(F.max_pool2d, x_grad, kernel, stride, padding, grad)
            cases[key + ("seqkern fwd+bwd",)] = _forward_backward(SF.max_pool2d, x_grad, kernel, stride, padding,
                                                                  grad)
            cases[key + ("bytes",)] = (x.numel() + out.numel()) * element
    cases[("clone",)] = lambda: base.clone()

    timings = {key: [] for key, case in cases.items() if callable(case)}
    for function in (case for case in cases.values() if callable(case)):
        function()  # warm-up: allocator, thread pool, first-touch of the inputs
    for _ in range(args.rounds):
        for key in timings:
            timings[key].append(_time_once(cases[key]))
    median = {key: statistics.median(values) for key, values in timings.items()}

    clone_bandwidth = 2 * base.numel() * element / median[("clone",)]
    print(f"float32 {tuple(base.shape)}, {args.threads} threads, medians of {args.rounds} interleaved rounds")
    print(f"clone: {median[('clone',)] * 1e3:.1f} ms, {clone_bandwidth / 1e9:.2f} GB/s")
    header = (f"{'layout':<14}{'config':<10}{'torch fwd':>10}{'ours fwd':>10}{'x':>6}"
              f"{'torch f+b':>11}{'ours f+b':>10}{'x':>6}{'fwd GB/s':>10}{'vs clone':>9}")
    print(header)
    for layout_name, _ in LAYOUTS:
        for config_name, *_ in CONFIGS:
            key = (layout_name, config_name)
            torch_fwd, ours_fwd = median[key + ("torch fwd",)], median[key + ("seqkern fwd",)]
            torch_fb, ours_fb = median[key + ("torch fwd+bwd",)], median[key + ("seqkern fwd+bwd",)]
            bandwidth = cases[key + ("bytes",)] / ours_fwd
            print(f"{layout_name:<14}{config_name:<10}{torch_fwd * 1e3:>8.1f}ms{ours_fwd * 1e3:>8.1f}ms"
                  f"{torch_fwd / ours_fwd:>6.2f}{torch_fb * 1e3:>9.1f}ms{ours_fb * 1e3:>8.1f}ms"
                  f"{torch_fb / ours_fb:>6.2f}{bandwidth / 1e9:>10.2f}{bandwidth / clone_bandwidth:>9.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
