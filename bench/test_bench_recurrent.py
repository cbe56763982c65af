"""LSTM / GRU / RNN inference and training step: torch.nn vs seqkern.nn, per case."""
import pytest

from bench.harness import CONTENDERS, benchmark_case, case_id, default_cases


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("case", default_cases("recurrent"), ids=case_id)
def test_recurrent(benchmark, case, contender):
    benchmark_case(benchmark, case, contender)
