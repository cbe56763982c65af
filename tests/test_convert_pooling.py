"""seqkern.convert swaps torch.nn max-pool modules too, keeping outputs and settings."""
import torch

import seqkern
from support import Inputs


def test_convert_swaps_max_pool_modules_and_keeps_outputs():
    inputs = Inputs()
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 5, 3, padding=1).double(),
        torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        torch.nn.Flatten(0, 1),
        torch.nn.MaxPool1d(2),
        torch.nn.Unflatten(0, (2, 5)),
        torch.nn.MaxPool3d((1, 2, 2)),
    )
    x = inputs.randn(2, 3, 9, 11)
    expected = model(x)
    converted = seqkern.convert(model, inplace=False)
    assert type(converted[1]) is seqkern.nn.MaxPool2d
    assert type(converted[3]) is seqkern.nn.MaxPool1d
    assert type(converted[5]) is seqkern.nn.MaxPool3d
    assert type(model[1]) is torch.nn.MaxPool2d
    assert repr(converted[1]) == repr(model[1])
    assert torch.equal(converted(x), expected)
