"""What the pytest-benchmark tests share: one benchmarked contender of one case, checked first."""
import pytest

from . import output
from .cases import Builders
from .report import build_cases, parse_args, prepare_and_check

CONTENDERS = ("torch", "seqkern")


def default_cases(family: str) -> list:
    """The cases `make bench` runs by default, of one family ("recurrent" or "pooling")."""
    return [case for case in build_cases(parse_args([])) if case.family == family]


def case_id(case) -> str:
    """The key as a -k friendly test id: lstm_train_T100_B16_H128-cpu-float32."""
    label = case.label.replace(" ", "_").replace("fwd+bwd", "fwdbwd")
    label = "".join(char for char in label if char.isalnum() or char == "_")
    return f"{label}-{case.device}-{str(case.dtype).replace('torch.', '')}"


def benchmark_case(benchmark, case, contender: str) -> None:
    """Benchmark ``contender``'s step of ``case`` in the case's group. seqkern runs only after
    agreeing with torch: a disagreement fails the test, an unavailable seqkern skips it."""
    checked = prepare_and_check(case, Builders())
    if contender == "seqkern" and checked.status == output.STATUS_FAILED:
        pytest.fail(checked.reason)
    if contender not in checked.steps:
        pytest.skip(checked.reason)
    benchmark.group = case.key
    benchmark.extra_info.update(case.describe())
    benchmark(checked.steps[contender])
