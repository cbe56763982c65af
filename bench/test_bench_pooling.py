"""max_pool2d at the ResNet stem, contiguous and channels_last, forward and forward+backward:
torch.nn.functional vs seqkern.functional, per case."""
import pytest

from bench.harness import CONTENDERS, benchmark_case, case_id, default_cases


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("case", default_cases("pooling"), ids=case_id)
def test_pooling(benchmark, case, contender):
    benchmark_case(benchmark, case, contender)
