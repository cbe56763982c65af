"""seqkern.nn.MaxPool1d/2d/3d: torch.nn's max-pool modules running seqkern's kernels.

Subclasses of the torch.nn modules: same constructor, attributes, repr and errors, plus
the seqkern extension of seqkern.functional.max_pool{1,2,3}d: ``padding`` may be "same",
"valid" or per-axis (before, after) pairs, and ``pad_value`` (keyword, default -inf).
"""
import math

import torch

from .. import functional
from ._scripting import NotScriptable


class _SeqkernMaxPool(NotScriptable):
    """The shared part: constructor, forward, the pad_value attribute and its repr. A
    subclass names its functional pool; torch.nn's class after this one in its bases gives
    the attributes and checks."""

    # A class default, so that modules built without __init__ (copied state) still work.
    pad_value: float = -math.inf

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False,
                 *, pad_value=-math.inf):
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self.pad_value = pad_value

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.pad_value == -math.inf else f"{text}, pad_value={self.pad_value}"

    def forward(self, input):
        return self._functional_pool(input, self.kernel_size, self.stride, self.padding, self.dilation,
                                     ceil_mode=self.ceil_mode, return_indices=self.return_indices,
                                     pad_value=self.pad_value)


class MaxPool1d(_SeqkernMaxPool, torch.nn.MaxPool1d):
    __doc__ = torch.nn.MaxPool1d.__doc__
    _functional_pool = staticmethod(functional.max_pool1d)


class MaxPool2d(_SeqkernMaxPool, torch.nn.MaxPool2d):
    __doc__ = torch.nn.MaxPool2d.__doc__
    _functional_pool = staticmethod(functional.max_pool2d)


class MaxPool3d(_SeqkernMaxPool, torch.nn.MaxPool3d):
    __doc__ = torch.nn.MaxPool3d.__doc__
    _functional_pool = staticmethod(functional.max_pool3d)
