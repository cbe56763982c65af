"""Drop-in replacements for torch.nn recurrent and max-pool modules."""
from .pooling import MaxPool1d, MaxPool2d, MaxPool3d
