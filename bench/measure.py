"""Timing, statistics, the hardware-floor calibrations and the correctness check.

Every sample is the mean time of ``number`` back-to-back calls; contenders are timed in
turns (torch, seqkern, seqkern, torch, ...) so slow drift of a shared machine hits both.
On CUDA a sample is bracketed by CUDA events and synchronised, so it measures the kernels,
not the launches.
"""
from __future__ import annotations

import functools
import gc
import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import torch

# Agreement bound of the correctness check: max |seqkern - torch| / max |torch| per tensor.
# Loose on purpose: a long sequence accumulates rounding differently in two correct kernels,
# while a wrong kernel is off by O(1).
CHECK_BOUNDS = {torch.float64: 1e-9, torch.float32: 1e-3, torch.bfloat16: 5e-2, torch.float16: 2e-2}
# cuDNN computes float32 layers with TF32 tensor cores unless told not to (10-bit mantissa).
TF32_BOUND = 1e-2


def check_bound(dtype: torch.dtype, device: str) -> float:
    if (dtype == torch.float32 and device.startswith("cuda")
            and (torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)):
        return TF32_BOUND
    return CHECK_BOUNDS[dtype]


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def sample(step: Callable, number: int, device: str) -> float:
    """Seconds per call of ``step``, averaged over ``number`` calls."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(number):
                step()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / number
        begin = time.perf_counter()
        for _ in range(number):
            step()
        return (time.perf_counter() - begin) / number
    finally:
        if gc_was_enabled:
            gc.enable()


def calls_per_sample(seconds_per_call: float, min_sample_seconds: float) -> int:
    """Enough calls that one sample lasts at least ``min_sample_seconds`` (timer resolution)."""
    if seconds_per_call <= 0:
        return 1000
    return max(1, min(1000, math.ceil(min_sample_seconds / seconds_per_call)))


def interleaved_samples(steps: Dict[str, Callable], number: int, repeats: int, device: str,
                        budget_seconds: float = math.inf) -> Dict[str, List[float]]:
    """Up to ``repeats`` samples of each step, the order of the contenders reversed on every
    round; after ``budget_seconds`` it stops at the end of a round, but not before 3 rounds."""
    names = list(steps)
    samples = {name: [] for name in names}
    begin = time.perf_counter()
    for round_index in range(repeats):
        for name in (names if round_index % 2 == 0 else names[::-1]):
            samples[name].append(sample(steps[name], number, device))
        if round_index + 1 >= 3 and time.perf_counter() - begin > budget_seconds:
            break
    return samples


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of a non-empty sequence."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Summary:
    median: float
    q1: float
    q3: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @classmethod
    def of(cls, values: Sequence[float]) -> "Summary":
        return cls(quantile(values, 0.5), quantile(values, 0.25), quantile(values, 0.75))

    def as_dict(self) -> dict:
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "iqr": self.iqr}


# ---------------------------------------------------------------------------------------------
# Floors: the same-run rate of the hardware at the work a case cannot avoid.

def gemm_rate_samples(device: str, dtype: torch.dtype, repeats: int, small: bool = False) -> List[float]:
    """FLOP/s of one large square torch.mm, one value per sample (``small``: a quick,
    meaningless figure for smoke runs)."""
    n = 256 if small else 8192 if device.startswith("cuda") else 1536
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(n, n, generator=generator).to(device, dtype)
    b = torch.randn(n, n, generator=generator).to(device, dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    step = functools.partial(torch.mm, a, b, out=out)
    step()
    synchronize(device)
    return [2.0 * n ** 3 / sample(step, 1, device) for _ in range(repeats)]


def _streaming_tensor(device: str, dtype: torch.dtype, small: bool) -> torch.Tensor:
    """A tensor far larger than the caches (``small``: 1 MiB for smoke runs)."""
    total_bytes = (1 << 20) if small else (1 << 30) if device.startswith("cuda") else (1 << 27)
    element = torch.empty((), dtype=dtype).element_size()
    return torch.ones(total_bytes // element, device=device, dtype=dtype)


def copy_bandwidth_samples(device: str, dtype: torch.dtype, repeats: int, small: bool = False) -> List[float]:
    """Bytes/s (read + written) of copy_() into a preallocated tensor: the memory floor."""
    source = _streaming_tensor(device, dtype, small)
    destination = torch.empty_like(source)
    step = functools.partial(destination.copy_, source)
    step()
    synchronize(device)
    moved = 2.0 * source.numel() * source.element_size()
    return [moved / sample(step, 1, device) for _ in range(repeats)]


def clone_bandwidth_samples(device: str, dtype: torch.dtype, repeats: int, small: bool = False) -> List[float]:
    """Bytes/s of clone(), for reference: on CPU it also pays for faulting in fresh pages, so it
    sits well below copy_() and is no floor."""
    source = _streaming_tensor(device, dtype, small)
    source.clone()
    synchronize(device)
    moved = 2.0 * source.numel() * source.element_size()
    return [moved / sample(source.clone, 1, device) for _ in range(repeats)]


CALIBRATIONS = {"flops": gemm_rate_samples, "bytes": copy_bandwidth_samples, "clone": clone_bandwidth_samples}
# What is measured alongside each floor rate, for reference only.
COMPANIONS = {"flops": (), "bytes": ("clone",)}


# ---------------------------------------------------------------------------------------------
# Correctness check


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| in float64; inf on a shape or NaN mismatch."""
    if actual is None or expected is None:
        return 0.0 if actual is None and expected is None else math.inf
    if tuple(actual.shape) != tuple(expected.shape):
        return math.inf
    actual = actual.detach().to("cpu", torch.float64)
    expected = expected.detach().to("cpu", torch.float64)
    if actual.numel() == 0:
        return 0.0
    if not torch.equal(torch.isnan(actual), torch.isnan(expected)):
        return math.inf
    finite = ~torch.isnan(expected)
    difference = (actual[finite] - expected[finite]).abs().max().item() if finite.any() else 0.0
    scale = expected[finite].abs().max().item() if finite.any() else 0.0
    return difference / scale if scale > 0 else difference


def compare(actual: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor], dtype: torch.dtype,
            device: str = "cpu"):
    """(worst relative error, name of the worst tensor, bound) over the tensors torch returned."""
    bound = check_bound(dtype, device)
    worst, worst_name = 0.0, ""
    for name, tensor in expected.items():
        error = relative_error(actual.get(name), tensor) if name in actual else math.inf
        if error > worst or not worst_name:
            worst, worst_name = error, name
    return worst, worst_name, bound
