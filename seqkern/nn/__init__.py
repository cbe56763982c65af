"""Drop-in replacements for torch.nn recurrent and max-pool modules."""
from .pooling import MaxPool1d, MaxPool2d, MaxPool3d
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "MaxPool1d", "MaxPool2d", "MaxPool3d"]
