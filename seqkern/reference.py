"""NumPy reference (float64, no torch): the oracle every backend is checked against."""
import numpy as np


def recurrent_layer_forward(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse):
    raise NotImplementedError


def recurrent_layer_backward(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh,
                             w_hr, w_peep, lengths, output, workspace, cell, reverse,
                             need_input_grad, need_weight_grad):
    raise NotImplementedError
