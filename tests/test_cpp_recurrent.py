"""The C++ recurrent layer kernels (seqkern._C) against the NumPy reference, through the
torch op and its autograd, and with bad input."""
import re

import pytest
import torch

import seqkern  # noqa: F401  (registers torch.ops.seqkern)
from seqkern import _C
from seqkern.ops import _reference_backend as reference
from seqkern.ops import recurrent as recurrent_ops
from seqkern.reference import CELL_GATES as GATES, LSTM_CELLS
from support import RECURRENT_VARIANTS as VARIANTS, Inputs, assert_close, with_odd_unit_strides

FORWARD_NAMES = ("output", "h_n", "c_n", "workspace")
GRAD_NAMES = ("grad_input", "grad_h0", "grad_c0", "grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh",
              "grad_w_hr", "grad_w_peep")


class Layer:
    """One layer call's arguments, drawn from support.Inputs."""

    def __init__(self, variant, steps=5, batch=3, input_size=7, hidden=37, proj=5, lengths=None,
                 reverse=False, dtype=torch.float64, seed=None, scale=1.0):
        cell, projection, peephole, bias = VARIANTS[variant]
        inputs = Inputs() if seed is None else Inputs(seed)
        rows = GATES[cell] * hidden
        out_size = proj if projection else hidden

        def draw(*shape):
            return inputs.randn(*shape, scale=scale, dtype=dtype)

        def draw_weight(*shape):
            # torch.nn's init scale (1 / sqrt(H)) keeps the recurrence from blowing up, so
            # float32 is compared on numbers of a sane size.
            return inputs.randn(*shape, scale=scale * hidden ** -0.5, dtype=dtype)

        self.cell, self.reverse, self.dtype = cell, reverse, dtype
        self.out_size, self.hidden = out_size, hidden
        self.input = draw(steps, batch, input_size)
        self.h0 = draw(batch, out_size)
        self.c0 = draw(batch, hidden) if cell in LSTM_CELLS else None
        self.w_ih, self.w_hh = draw_weight(rows, input_size), draw_weight(rows, out_size)
        self.b_ih = draw_weight(rows) if bias else None
        self.b_hh = draw_weight(rows) if bias else None
        self.w_hr = draw_weight(proj, hidden) if projection else None
        self.w_peep = draw_weight(3 if cell == "lstm" else 2, hidden) if peephole else None
        self.lengths = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
        self.grad_output = draw(steps, batch, out_size)
        self.grad_h_n = draw(batch, out_size)
        self.grad_c_n = draw(batch, hidden) if cell in LSTM_CELLS else None

    def tensors(self):
        return (self.input, self.h0, self.c0, self.w_ih, self.w_hh, self.b_ih, self.b_hh, self.w_hr, self.w_peep)

    def forward_args(self):
        return (*self.tensors(), self.lengths, self.cell, self.reverse)

    def backward_args(self, output, workspace, need_input_grad=True, need_weight_grad=True):
        return (self.grad_output, self.grad_h_n, self.grad_c_n, *self.tensors(), self.lengths, output, workspace,
                self.cell, self.reverse, need_input_grad, need_weight_grad)

    def run(self, backend):
        forward = backend.recurrent_layer_forward(*self.forward_args())
        backward = backend.recurrent_layer_backward(*self.backward_args(forward[0], forward[3]))
        return forward, backward

    def reference_run(self):
        """The reference on the same numbers, in float64."""
        widened = Layer.__new__(Layer)
        widened.__dict__.update({k: (v.double() if isinstance(v, torch.Tensor) and v.dtype.is_floating_point else v)
                                 for k, v in self.__dict__.items()})
        return widened.run(reference)


def assert_matches_reference(layer, dtype=None):
    (forward, backward), (expected_forward, expected_backward) = layer.run(_C), layer.reference_run()
    for name, actual, expected in zip(FORWARD_NAMES + GRAD_NAMES, forward + backward,
                                      expected_forward + expected_backward):
        assert actual.dtype == layer.dtype, name
        assert actual.shape == expected.shape, f"{name}: {tuple(actual.shape)} vs {tuple(expected.shape)}"
        assert_close(actual, expected, dtype=dtype, msg=f"{name} differs from the reference")


UNEVEN = (2, 5, 0)


@pytest.mark.parametrize("lengths", [None, UNEVEN], ids=["full", "uneven"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_float64_matches_reference(variant, reverse, lengths):
    assert_matches_reference(Layer(variant, lengths=lengths, reverse=reverse))


# (batch, hidden, input) for the step-product kernel: row tails of its 6-row tiles (1, 2 on
# the wide path, as 4 with AVX2's narrow panels of two vectors; 5 in one tile; 7 and 8 as 6
# rows narrow and the 1 or 2 left wide), vector padding of H, K past one cache block (G * H
# in backward), and at 70 x 250 a step big enough for the threads to share it. Where G * H
# is whole vectors, the input projection runs on the same kernel (packed_rows_product).
SHAPES = [(1, 16, 3), (2, 9, 1), (7, 20, 5), (8, 33, 6), (11, 128, 40), (70, 250, 9)]


@pytest.mark.parametrize("batch,hidden,input_size", SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("variant", ["lstm_proj_peephole", "lstm", "gru", "gru_reset_before", "rnn_tanh"])
def test_shapes_match_reference(variant, batch, hidden, input_size):
    lengths = [(3 * b) % 4 for b in range(batch)]
    lengths[0] = 3
    layer = Layer(variant, steps=3, batch=batch, input_size=input_size, hidden=hidden, proj=7, lengths=lengths,
                  reverse=batch % 2 == 0)
    assert_matches_reference(layer)


@pytest.mark.parametrize("variant", ["lstm", "gru"])
def test_products_over_blocks_of_columns_match_reference(variant):
    """With 2048 inputs, the products over all steps pack and run their weight in blocks of
    columns that a core's L2 cache holds (kRowsProductBlockBytes in csrc/recurrent.cpp): the
    input projection's G * 48 columns and the input gradient's 2048 each make two or more
    blocks, most of them with a narrower last block."""
    assert_matches_reference(Layer(variant, steps=3, batch=5, input_size=2048, hidden=48, lengths=[3, 1, 0, 2, 3]))


def test_deep_weight_gradients_match_reference(threads):
    """T B = 2 x 16000 steps' rows: on two threads, each one's copy of a chunk (36 of the 64
    gate rows) of the transposed gate gradients would pass kGatherBytes (csrc/recurrent.cpp),
    so the weight gradients read them in place, k a row apart."""
    threads(2)
    assert_matches_reference(Layer("lstm", steps=2, batch=16000, input_size=16, hidden=16, lengths=[2, 1] * 8000))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("lengths", [None, (1, 0, 1)], ids=["full", "one_empty"])
@pytest.mark.parametrize("hidden", [37, 32])
@pytest.mark.parametrize("variant", VARIANTS)
def test_single_step_matches_reference(variant, hidden, lengths, dtype):
    """T = 1 (the cells) at B = 3, too few rows to fill half a vector, runs its batch-row
    products straight from the weight: dot products of rows into each gate block (padded
    where H = 37; 7 inputs leave a tail of each row), and in backward the weight's rows scaled
    and summed (vectors four at a time, one at a time, then single columns). It reads h0 where
    it lies and takes the weight gradient of w_hh from the gate gradients as they are (an
    empty sequence's are zeros)."""
    assert_matches_reference(Layer(variant, steps=1, hidden=hidden, lengths=lengths, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("hidden", [37, 32])
@pytest.mark.parametrize("variant", VARIANTS)
def test_single_step_with_a_batch_of_vectors_matches_reference(variant, hidden, dtype):
    """T = 1 at a batch that fills half a vector or more (8 and 19 rows of float32, 4 and 19 of
    float64) computes its products transposed, w . xᵀ with xᵀ packed, into each gate block,
    padded where H = 37, its gate rows split among the threads 64 at a time. One sequence is
    empty."""
    lanes = 64 // torch.tensor([], dtype=dtype).element_size()
    for batch in (lanes // 2, 19):
        lengths = [1] * (batch - 1) + [0]
        assert_matches_reference(Layer(variant, steps=1, batch=batch, input_size=50 if hidden == 37 else 7,
                                       hidden=hidden, lengths=lengths, dtype=dtype))


@pytest.fixture
def threads():
    """Sets torch's intra-op thread count for one test, then restores it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture(params=["columns", "rows"])
def team_split(request):
    """Each way a team can share the steps of a time loop (csrc/recurrent.cpp, Split), forced
    for one test where the step is big enough for either; the automatic choice after."""
    before = _C._set_team_split(request.param)
    assert before == "auto"
    yield request.param
    _C._set_team_split(before)


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("variant", ["lstm_proj_peephole", "gru_reset_before", "rnn_relu"])
def test_thread_teams_match_reference(variant, count, threads, team_split):
    """Big enough for the threads to share each step (B * Hout * G * H >= kTeamProduct in
    csrc/recurrent.cpp), on one thread and on three: by hidden units, 37 of them in float64's
    8-wide vectors make three uneven shares; by rows, 400 sequences of uneven lengths make
    three shares of 133 or 134."""
    threads(count)
    layer = Layer(variant, steps=4, batch=400, input_size=5, hidden=37, proj=21, lengths=[4, 0, 2, 3] * 100,
                  reverse=True)
    assert_matches_reference(layer)


@pytest.fixture
def impatient_teams():
    """Every thread team breaks up at its first barrier (thread 0 goes on alone), for one
    test; the patience before is restored after."""
    before = _C._set_team_patience(0)
    yield
    _C._set_team_patience(before)


# (variant, batch, hidden): each step big enough for a team of two (see
# test_thread_teams_match_reference); the projection and the reset-before GRU meet twice per
# step, so they break up between the two products.
BREAKUP_CASES = [("lstm_proj", 17, 131), ("gru_reset_before", 17, 131), ("rnn_tanh", 33, 131)]
BREAKUP_ATTEMPTS = 20


@pytest.mark.parametrize("variant,batch,hidden", BREAKUP_CASES, ids=lambda v: str(v))
def test_team_breakup_gives_the_same_bits(variant, batch, hidden, threads, team_split, request):
    """A team whose thread waits too long at a barrier (descheduled on a busy machine) goes
    on with one thread; the numbers must not change by a bit. (A team sharing rows meets
    once, when the weight is packed.)"""
    threads(2)
    layer = Layer(variant, steps=6, batch=batch, input_size=9, hidden=hidden, proj=97,
                  lengths=[6, 3, 0, 5] * (batch // 4) + [6] * (batch % 4), reverse=True, dtype=torch.float32)
    expected = layer.run(_C)
    request.getfixturevalue("impatient_teams")
    # A team breaks up only where a thread finds a barrier still shut; on a busy machine the
    # other thread can arrive before the first one looks, so a run may keep a team whole.
    # Every run must give the same bits, and some run must break up both teams.
    for _ in range(BREAKUP_ATTEMPTS):
        breakups = _C._team_breakups()
        actual = layer.run(_C)
        for name, a, e in zip(FORWARD_NAMES + GRAD_NAMES, actual[0] + actual[1], expected[0] + expected[1]):
            assert torch.equal(a, e), name
        if _C._team_breakups() == breakups + 2:
            break
    else:
        pytest.fail(f"the forward and the backward team did not both break up in {BREAKUP_ATTEMPTS} runs")


@pytest.mark.parametrize("variant,batch,hidden", BREAKUP_CASES[:2], ids=lambda v: str(v))
def test_team_breakups_at_any_barrier_give_the_same_bits(variant, batch, hidden, threads, team_split,
                                                         impatient_teams):
    """With a patience of about a step, teams break up at whichever barrier a thread happens
    to wait at, or not at all: every run must end (no thread left waiting at a barrier the
    others have left) with the same bits."""
    threads(2)
    layer = Layer(variant, steps=40, batch=batch, input_size=9, hidden=hidden, proj=97, dtype=torch.float32)
    _C._set_team_patience(1000)
    expected = layer.run(_C)
    _C._set_team_patience(10)
    for _ in range(10):
        actual = layer.run(_C)
        for name, a, e in zip(FORWARD_NAMES + GRAD_NAMES, actual[0] + actual[1], expected[0] + expected[1]):
            assert torch.equal(a, e), name


# (variant, batch, steps), float32, I and H whole vectors so that seqkern's kernels run every
# product: at B = 1 each step's product has one row, whose sums split whatever the team;
# T B = 7 leaves the input projection a chunk of one row on two threads; B = 16 shares rows.
THREAD_COUNT_CASES = [("lstm", 1, 7), ("gru", 1, 7), ("lstm", 16, 5), ("rnn_tanh", 16, 5), ("gru", 16, 1), ("lstm", 19, 1)]


@pytest.mark.parametrize("variant,batch,steps", THREAD_COUNT_CASES, ids=lambda v: str(v))
def test_bits_do_not_depend_on_the_thread_count(variant, batch, steps, threads):
    """The same numbers, to the bit, on one, two and three threads: a row of every product
    sums its k in one order whatever the team, the chunk or the tile."""
    layer = Layer(variant, steps=steps, batch=batch, input_size=32, hidden=128, dtype=torch.float32)
    threads(1)
    expected = layer.run(_C)
    for count in (2, 3):
        threads(count)
        actual = layer.run(_C)
        for name, a, e in zip(FORWARD_NAMES + GRAD_NAMES, actual[0] + actual[1], expected[0] + expected[1]):
            assert torch.equal(a, e), f"{name} on {count} threads"


def test_team_patience_weighs_waiting_against_going_alone():
    """A thread waits at most the base patience plus what going on alone would cost the
    rest of the loop (the other threads' shares of the phases left, at the pace so far),
    less what it has waited already; a base of 0 never waits (impatient teams)."""
    before = _C._set_team_patience(300)
    try:
        # 10 ms for 10 phases: 1 ms a phase; alone, 90 phases left cost one more share each.
        assert _C._team_patience_for(2, 10_000, 10, 90, 0) == 300 + 90_000
        assert _C._team_patience_for(3, 10_000, 10, 90, 0) == 300 + 2 * 90_000
        # Waits so far count against it, and do not count as the team's pace.
        assert _C._team_patience_for(2, 50_000, 10, 90, 40_000) == 300 + 90_000 - 40_000
        assert _C._team_patience_for(2, 100_000, 10, 90, 95_000) == 300
        # The last barrier, or the first (nothing done yet: the time so far is one phase).
        assert _C._team_patience_for(2, 10_000, 10, 0, 0) == 300
        assert _C._team_patience_for(2, 1_000, 0, 100, 0) == 300 + 100_000
        _C._set_team_patience(0)
        assert _C._team_patience_for(2, 10_000, 10, 90, 0) == 0
    finally:
        _C._set_team_patience(before)


def test_team_patience_must_not_be_negative():
    with pytest.raises(ValueError, match="microseconds must be >= 0, got -1"):
        _C._set_team_patience(-1)


def test_team_split_must_be_known():
    with pytest.raises(ValueError, match="split must be 'auto', 'columns' or 'rows', got 'diagonal'"):
        _C._set_team_split("diagonal")
    assert _C._set_team_split("auto") == "auto"


@pytest.mark.parametrize("variant", ["lstm", "lstm_proj_peephole", "lstm_coupled", "gru", "gru_reset_before",
                                     "rnn_tanh", "rnn_relu"])
def test_float32_matches_reference(variant):
    assert_matches_reference(Layer(variant, lengths=UNEVEN, reverse=True, dtype=torch.float32))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("variant", ["lstm_proj_peephole", "gru", "gru_reset_before", "rnn_tanh"])
def test_float32_whole_vectors_match_reference(variant, reverse):
    """Sizes of whole vectors (48 units, 64 inputs, a projection of 32): every product over all
    steps runs on seqkern's kernel, and the weight gradients read one transposed copy of the
    gate gradients, made 8 by 8 (float32), with tails: k = 11 sequences x 5 steps = 55; the
    hidden side's skips each sequence's first step, the last in reverse. The projection's 32
    rows come in chunks of 18. At half the usual scale, so that a weight gradient's 55-term
    float32 sums stay within the table's tolerance."""
    layer = Layer(variant, steps=5, batch=11, input_size=64, hidden=48, proj=32,
                  lengths=[5, 2, 0, 4, 5, 1, 3, 5, 5, 2, 4], reverse=reverse, dtype=torch.float32, scale=0.5)
    assert_matches_reference(layer)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("variant", ["lstm_proj_peephole", "gru", "rnn_tanh"])
def test_reduced_precision_runs_in_float32_inside(variant, dtype):
    layer = Layer(variant, lengths=UNEVEN, dtype=dtype)
    assert_matches_reference(layer, dtype=dtype)


def test_integer_input_is_a_clear_error():
    args = list(Layer("lstm", dtype=torch.float32).forward_args())
    args[0] = torch.zeros(args[0].shape, dtype=torch.int32)
    with pytest.raises(ValueError, match="torch.int32 is not supported; use float32, float64, bfloat16 or float16"):
        _C.recurrent_layer_forward(*args)


def test_gates_saturate_without_nan():
    """Large pre-activations: the float32 activations saturate to 0, 1 and +-1, like torch."""
    layer = Layer("lstm", dtype=torch.float32, scale=200.0)
    forward, backward = layer.run(_C)
    expected_forward, expected_backward = layer.reference_run()
    for actual, expected in zip(forward[:3], expected_forward[:3]):
        assert torch.isfinite(actual).all()
        assert_close(actual, expected)


@pytest.mark.parametrize("variant", ["lstm", "gru", "rnn_tanh"])
def test_nan_input_propagates_like_torch(variant):
    """A NaN in one sequence's input makes that sequence's output NaN from that step on (as in
    torch): the activations' clamp must not turn NaN into a saturated gate."""
    layer = Layer(variant, dtype=torch.float32)
    layer.input[2, 1, 0] = float("nan")
    output, h_n = _C.recurrent_layer_forward(*layer.forward_args())[:2]
    assert torch.isnan(output[2:, 1]).all() and torch.isnan(h_n[1]).all()
    assert torch.isfinite(output[:2]).all()
    assert torch.isfinite(output[:, [0, 2]]).all() and torch.isfinite(h_n[[0, 2]]).all()


def test_non_contiguous_inputs_give_the_same_numbers():
    layer = Layer("lstm_proj_peephole", lengths=UNEVEN)
    expected = layer.run(_C)
    for name in ("input", "h0", "c0", "w_ih", "w_hh", "w_hr", "grad_output", "grad_h_n"):
        tensor = getattr(layer, name)
        strided = torch.empty(*tensor.shape[:-1], 2 * tensor.shape[-1], dtype=tensor.dtype)[..., ::2]
        strided.copy_(tensor)
        assert not strided.is_contiguous()
        setattr(layer, name, strided)
    actual = layer.run(_C)
    for a, e in zip(actual[0] + actual[1], expected[0] + expected[1]):
        assert torch.equal(a, e)


# (steps, batch, input_size, hidden): size-1 dimensions in every argument that has them, at a
# single step (the cells' products) and over several.
UNIT_SHAPES = [(1, 1, 1, 37), (5, 3, 1, 1), (4, 1, 3, 1)]


@pytest.mark.parametrize("steps,batch,input_size,hidden", UNIT_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("variant", ["lstm_proj_peephole", "gru", "gru_reset_before", "rnn_tanh"])
def test_size_one_dimensions_with_any_stride_give_the_same_numbers(variant, steps, batch, input_size, hidden):
    layer = Layer(variant, steps=steps, batch=batch, input_size=input_size, hidden=hidden, proj=1)
    expected = layer.run(_C)
    restrided = 0
    for name, tensor in vars(layer).items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and 1 in tensor.shape:
            setattr(layer, name, with_odd_unit_strides(tensor))
            restrided += 1
    assert restrided >= 4
    actual = layer.run(_C)
    for name, a, e in zip(FORWARD_NAMES + GRAD_NAMES, actual[0] + actual[1], expected[0] + expected[1]):
        assert torch.equal(a, e), name


def test_unneeded_gradients_are_empty():
    layer = Layer("lstm_proj_peephole")
    output, _, _, workspace = _C.recurrent_layer_forward(*layer.forward_args())
    grads = _C.recurrent_layer_backward(*layer.backward_args(output, workspace, need_input_grad=False,
                                                             need_weight_grad=False))
    full = _C.recurrent_layer_backward(*layer.backward_args(output, workspace))
    for name, grad in zip(GRAD_NAMES, grads):
        if name in ("grad_h0", "grad_c0"):
            assert torch.equal(grad, full[GRAD_NAMES.index(name)])
        else:
            assert grad.shape == (0,), name


def test_absent_results_are_empty():
    layer = Layer("gru_no_bias")
    forward, backward = layer.run(_C)
    assert forward[2].shape == (0,)
    for name in ("grad_c0", "grad_b_ih", "grad_b_hh", "grad_w_hr", "grad_w_peep"):
        assert backward[GRAD_NAMES.index(name)].shape == (0,), name


@pytest.mark.parametrize("variant", ["lstm_proj_peephole", "gru_reset_before"])
def test_no_steps_pass_the_states_through(variant):
    layer = Layer(variant, steps=0)
    forward, backward = layer.run(_C)
    assert forward[0].shape == (0, 3, layer.out_size)
    assert torch.equal(forward[1], layer.h0)
    assert torch.equal(backward[GRAD_NAMES.index("grad_h0")], layer.grad_h_n)
    assert not backward[GRAD_NAMES.index("grad_w_hh")].any()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_empty_batch_and_zero_lengths(cell):
    layer = Layer(cell, batch=0)
    forward, backward = layer.run(_C)
    assert forward[0].shape == (5, 0, layer.out_size)
    assert backward[GRAD_NAMES.index("grad_w_hh")].abs().sum() == 0
    layer = Layer(cell, lengths=(0, 0, 0))
    forward, backward = layer.run(_C)
    assert forward[0].abs().sum() == 0 and forward[3].abs().sum() == 0
    assert torch.equal(forward[1], layer.h0)
    assert torch.equal(backward[GRAD_NAMES.index("grad_h0")], layer.grad_h_n)


def test_deterministic():
    layer = Layer("lstm_proj_peephole", steps=4, batch=40, input_size=30, hidden=200, proj=60,
                  lengths=[4, 2, 3, 1] * 10, dtype=torch.float32)
    first, second = layer.run(_C), layer.run(_C)
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("variant", ["lstm", "gru", "rnn_tanh"])
def test_forward_gives_the_same_bits_on_any_thread_count(variant, dtype, threads):
    """Where G * H is whole vectors (here H = 48: whole 64-byte vectors, so AVX-512 builds
    too, whose float32 vectors hold 16) the forward runs on seqkern's kernels only:
    the input projection shares its T * B = 7 * 50 rows among the threads in chunks, the
    step product its 50 rows or its columns, and every row sums in one order whatever its
    tile. One, two and three threads must give the same forward bits (the backward's products
    over 19 input columns, not whole vectors, are BLAS's, whose sums depend on its threads),
    and in float64 the reference's
    numbers (float32's weight gradients sum 350 rows, beyond the table's float32 tolerance)."""
    layer = Layer(variant, steps=7, batch=50, input_size=19, hidden=48, lengths=[7, 3, 5, 0, 6] * 10, dtype=dtype)
    threads(1)
    expected = layer.run(_C)[0]
    for count in (1, 2, 3):
        threads(count)
        for name, actual, wanted in zip(FORWARD_NAMES, layer.run(_C)[0], expected):
            assert torch.equal(actual, wanted), f"{name} on {count} threads"
        if dtype == torch.float64:
            assert_matches_reference(layer)


# ---------------------------------------------------------------- through the op

def op_inputs(layer, requires_grad=True):
    tensors = [t if t is None else t.clone().requires_grad_(requires_grad) for t in layer.tensors()]
    return (*tensors, layer.lengths, layer.cell, layer.reverse)


@pytest.mark.parametrize("variant,reverse,lengths", [
    ("lstm_proj_peephole", True, (3, 1)),
    ("lstm_coupled_peephole", False, (2, 3)),
    ("gru", True, (1, 3)),
    ("gru_reset_before", False, None),
    ("rnn_tanh", True, (3, 2)),
])
def test_gradcheck(monkeypatch, variant, reverse, lengths):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    layer = Layer(variant, steps=3, batch=2, input_size=3, hidden=4, proj=2, lengths=lengths, reverse=reverse)
    args = op_inputs(layer)

    def run(*tensors):
        output, h_n, c_n, _ = torch.ops.seqkern.recurrent_layer(*tensors, *args[9:])
        return (output, h_n, c_n) if c_n.numel() else (output, h_n)

    assert torch.autograd.gradcheck(run, args[:9], eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("variant", ["lstm_proj_peephole", "gru", "gru_reset_before"])
def test_opcheck(monkeypatch, variant):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    layer = Layer(variant, steps=3, batch=2, input_size=3, hidden=4, proj=2, lengths=(3, 1), reverse=True)
    torch.library.opcheck(torch.ops.seqkern.recurrent_layer.default, op_inputs(layer))
    output, _, _, workspace = _C.recurrent_layer_forward(*layer.forward_args())
    torch.library.opcheck(torch.ops.seqkern.recurrent_layer_backward.default, layer.backward_args(output, workspace))


@pytest.mark.parametrize("variant,reverse,lengths,frozen", [
    ("lstm_proj_peephole", True, (3, 1), False),
    ("lstm_coupled", False, (2, 3), True),
    ("gru", True, (1, 3), False),
    ("gru_reset_before", False, None, True),
    ("rnn_relu", True, (3, 2), False),
])
def test_gradgradcheck(monkeypatch, variant, reverse, lengths, frozen):
    """Second derivatives through the BPTT op (create_graph=True, then backward); frozen: only
    the input and initial states require grad, so the op returns no weight gradients."""
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    layer = Layer(variant, steps=3, batch=2, input_size=3, hidden=4, proj=2, lengths=lengths, reverse=reverse)
    args = list(op_inputs(layer))
    if frozen:
        args[3:9] = [None if t is None else t.detach() for t in args[3:9]]
    tracked = [t for t in args[:9] if t is not None and t.requires_grad]

    def run(*tensors):
        filled = iter(tensors)
        arguments = [next(filled) if t is not None and t.requires_grad else t for t in args[:9]]
        return present_outputs(*torch.ops.seqkern.recurrent_layer(*arguments, *args[9:])[:3])

    assert torch.autograd.gradgradcheck(run, tracked, eps=1e-6, atol=1e-7)


# ---------------------------------------------------------------- forward-mode AD and torch.func
# The kernels' autograd Function carries neither tangents nor functorch transforms; those go
# through the layer written as ATen ops (csrc/recurrent_op.cpp), checked here against the
# reference: its outputs, its vector-Jacobian products and, by the transposition identity
# <u, J v> = <J^T u, v>, its Jacobian-vector products.

def tangents_for(layer, seed=11):
    inputs = Inputs(seed)
    return [None if t is None else inputs.randn(*t.shape, dtype=t.dtype) for t in layer.tensors()]


def present_outputs(output, h_n, c_n):
    return (output, h_n, c_n) if c_n.numel() else (output, h_n)


def cotangents(layer):
    return [t for t in (layer.grad_output, layer.grad_h_n, layer.grad_c_n) if t is not None]


TRANSFORM_CASES = [pytest.param(variant, reverse, lengths, id=f"{variant}-{direction}-{kind}")
                   for variant in VARIANTS
                   for reverse, direction in ((False, "forward"), (True, "reverse"))
                   for lengths, kind in ((None, "full"), ((2, 4, 0), "uneven"))]


@pytest.mark.parametrize("variant,reverse,lengths", TRANSFORM_CASES)
def test_jvp_matches_reference(monkeypatch, variant, reverse, lengths):
    """Tangents of every output, outside functorch: the primal outputs are the kernels' own."""
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    layer = Layer(variant, steps=4, batch=3, input_size=5, hidden=6, proj=4, lengths=lengths, reverse=reverse)
    tangents = tangents_for(layer)
    with torch.autograd.forward_ad.dual_level():
        duals = [t if t is None else torch.autograd.forward_ad.make_dual(t, v)
                 for t, v in zip(layer.tensors(), tangents)]
        unpacked = [torch.autograd.forward_ad.unpack_dual(t)
                    for t in present_outputs(*recurrent_ops.recurrent_layer(*duals, *layer.forward_args()[9:])[:3])]
    plain = present_outputs(*_C.recurrent_layer_forward(*layer.forward_args())[:3])
    for (primal, _), expected in zip(unpacked, plain):
        assert torch.equal(primal, expected)
    along_tangent = sum((u * dual.tangent).sum() for u, dual in zip(cotangents(layer), unpacked))
    _, reference_grads = layer.reference_run()
    expected = sum((g * v).sum() for g, v in zip(reference_grads, tangents) if v is not None)
    assert_close(along_tangent, expected)


@pytest.mark.parametrize("variant,reverse,lengths", TRANSFORM_CASES)
def test_torch_func_vjp_matches_reference(monkeypatch, variant, reverse, lengths):
    """Under a functorch transform the whole layer, outputs included, is the ATen-op path."""
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    layer = Layer(variant, steps=4, batch=3, input_size=5, hidden=6, proj=4, lengths=lengths, reverse=reverse)
    present = [t for t in layer.tensors() if t is not None]

    def run(*tensors):
        filled = iter(tensors)
        arguments = [None if t is None else next(filled) for t in layer.tensors()]
        return present_outputs(*recurrent_ops.recurrent_layer(*arguments, *layer.forward_args()[9:])[:3])

    outputs, vjp = torch.func.vjp(run, *present)
    expected_outputs, expected_grads = layer.reference_run()
    for actual, expected in zip(outputs, expected_outputs):
        assert_close(actual, expected)
    for actual, expected in zip(vjp(tuple(cotangents(layer))), [g for g in expected_grads if g.numel()]):
        assert_close(actual, expected)


@pytest.mark.parametrize("variant", ["lstm_proj_peephole", "lstm_coupled_peephole", "gru", "gru_reset_before",
                                     "rnn_relu"])
def test_gradcheck_forward_mode(monkeypatch, variant):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    layer = Layer(variant, steps=3, batch=2, input_size=3, hidden=4, proj=2, lengths=(3, 1), reverse=True)
    args = op_inputs(layer)

    def run(*tensors):
        return present_outputs(*torch.ops.seqkern.recurrent_layer(*tensors, *args[9:])[:3])

    assert torch.autograd.gradcheck(run, args[:9], eps=1e-6, atol=1e-7, check_forward_ad=True,
                                    check_batched_forward_grad=True, check_backward_ad=False)


@pytest.mark.parametrize("variant", ["lstm_proj_peephole", "gru_reset_before", "rnn_tanh"])
def test_second_derivatives_under_torch_func_match_finite_differences(monkeypatch, variant):
    """A Hessian-vector product (jvp of grad) against central differences of the kernels'
    gradient, which the reference checks."""
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    layer = Layer(variant, steps=3, batch=2, input_size=3, hidden=4, proj=2, lengths=(3, 2))
    weights = cotangents(layer)

    def loss(x):
        outputs = recurrent_ops.recurrent_layer(x, *layer.tensors()[1:], *layer.forward_args()[9:])[:3]
        return sum((w * o).sum() for w, o in zip(weights, present_outputs(*outputs)))

    direction = Inputs(5).randn(*layer.input.shape)
    _, hessian_vector = torch.func.jvp(torch.func.grad(loss), (layer.input,), (direction,))
    step = 1e-5

    def kernel_grad(x):
        x = x.clone().requires_grad_()
        return torch.autograd.grad(loss(x), x)[0]

    expected = (kernel_grad(layer.input + step * direction) - kernel_grad(layer.input - step * direction)) / (2 * step)
    torch.testing.assert_close(hessian_vector, expected, rtol=1e-6, atol=1e-8)


def test_reduced_precision_tangents_keep_the_dtype(monkeypatch):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    layer = Layer("gru", steps=3, batch=2, input_size=3, hidden=4, dtype=torch.bfloat16)
    args = layer.forward_args()
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(layer.input, torch.ones_like(layer.input))
        primal, tangent = torch.autograd.forward_ad.unpack_dual(recurrent_ops.recurrent_layer(dual, *args[1:])[0])
    assert tangent.dtype == torch.bfloat16
    assert torch.equal(primal, _C.recurrent_layer_forward(*args)[0])


def test_forward_mode_ad_of_the_backward_is_a_clear_error(monkeypatch):
    """jvp of a gradient outside torch.func needs the backward's derivative."""
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    layer = Layer("gru", steps=2, batch=2, hidden=3)
    args = op_inputs(layer)
    output = torch.ops.seqkern.recurrent_layer(*args)[0]
    with torch.autograd.forward_ad.dual_level():
        grad_output = torch.autograd.forward_ad.make_dual(torch.ones_like(output), torch.ones_like(output))
        with pytest.raises(RuntimeError, match="no forward-mode AD of their backward"):
            torch.autograd.grad(output, args[0], grad_output)


def test_compile_fullgraph_lstm_and_gru(monkeypatch):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    lstm = Layer("lstm", steps=4, batch=2, input_size=3, hidden=5, lengths=(4, 2), dtype=torch.float32)
    gru = Layer("gru", steps=4, batch=2, input_size=5, hidden=6, dtype=torch.float32, seed=7)
    lstm_args, gru_args = op_inputs(lstm), op_inputs(gru)

    def model(lstm_tensors, gru_tensors):
        hidden = torch.ops.seqkern.recurrent_layer(*lstm_tensors, *lstm_args[9:])[0]
        output = torch.ops.seqkern.recurrent_layer(hidden, *gru_tensors[1:], *gru_args[9:])[0]
        return output.sum()

    def grads(function):
        leaves = [t for t in lstm_args[:9] + gru_args[1:9] if t is not None]
        return torch.autograd.grad(function(lstm_args[:9], gru_args[:9]), leaves)

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for actual, expected in zip(grads(compiled), grads(model)):
        assert_close(actual, expected)


# ---------------------------------------------------------------- bad input, straight into seqkern._C

def bad_forward(**changes):
    layer = Layer("lstm", steps=3, batch=2, input_size=3, hidden=4)
    args = dict(zip(("input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_peep", "lengths", "cell",
                     "reverse"), layer.forward_args()))
    args.update(changes)
    return lambda: _C.recurrent_layer_forward(*args.values())


BAD_FORWARD = {
    "unknown cell": (dict(cell="gru2"), "unknown cell 'gru2'; expected one of rnn_tanh"),
    "2-D input": (dict(input=torch.zeros(3, 3, dtype=torch.float64)), "input must be 3-D (T, B, I), got 2-D"),
    "w_ih rows": (dict(w_ih=torch.zeros(15, 3, dtype=torch.float64)), "w_ih must be 2-D with a multiple of 4 rows"),
    "w_ih columns": (dict(w_ih=torch.zeros(16, 5, dtype=torch.float64)), "w_ih must have shape (16, 3), got (16, 5)"),
    "w_hh": (dict(w_hh=torch.zeros(16, 5, dtype=torch.float64)), "w_hh must have shape (16, 4), got (16, 5)"),
    "b_ih": (dict(b_ih=torch.zeros(15, dtype=torch.float64)), "b_ih must have shape (16,), got (15,)"),
    "b_hh": (dict(b_hh=torch.zeros(4, 4, dtype=torch.float64)), "b_hh must have shape (16,), got (4, 4)"),
    "h0": (dict(h0=torch.zeros(3, 4, dtype=torch.float64)), "h0 must have shape (2, 4), got (3, 4)"),
    "c0 missing": (dict(c0=None), "cell 'lstm' needs c0 of shape (2, 4)"),
    "c0 shape": (dict(c0=torch.zeros(2, 5, dtype=torch.float64)), "c0 must have shape (2, 4), got (2, 5)"),
    "c0 for gru": (dict(cell="gru", w_ih=torch.zeros(12, 3, dtype=torch.float64),
                        w_hh=torch.zeros(12, 4, dtype=torch.float64), b_ih=None, b_hh=None),
                   "cell 'gru' has no cell state, but c0 was given"),
    "w_hr for gru": (dict(cell="gru", c0=None, w_ih=torch.zeros(12, 3, dtype=torch.float64),
                          w_hh=torch.zeros(12, 4, dtype=torch.float64), b_ih=None, b_hh=None,
                          w_hr=torch.zeros(2, 4, dtype=torch.float64)),
                     "w_hr (projection) is only supported for LSTM cells"),
    "w_hr shape": (dict(w_hr=torch.zeros(2, 5, dtype=torch.float64)), "w_hr must have shape (P, 4), got (2, 5)"),
    "w_peep shape": (dict(w_peep=torch.zeros(2, 4, dtype=torch.float64)), "w_peep must have shape (3, 4), got (2, 4)"),
    "w_peep for rnn": (dict(cell="rnn_tanh", c0=None, w_ih=torch.zeros(4, 3, dtype=torch.float64),
                            w_hh=torch.zeros(4, 4, dtype=torch.float64), b_ih=None, b_hh=None,
                            w_peep=torch.zeros(3, 4, dtype=torch.float64)),
                       "w_peep (peephole) is only supported for LSTM cells"),
    "dtype": (dict(w_hh=torch.zeros(16, 4, dtype=torch.float32)), "w_hh has dtype torch.float32, but input has torch.float64"),
    "lengths dtype": (dict(lengths=torch.tensor([1, 2], dtype=torch.int32)),
                      "lengths must be an int64 tensor of shape (2,), got torch.int32 (2,)"),
    "lengths shape": (dict(lengths=torch.tensor([1, 2, 3])), "lengths must be an int64 tensor of shape (2,)"),
    "lengths too long": (dict(lengths=torch.tensor([1, 4])), "lengths[1] = 4 is outside [0, 3]"),
    "negative length": (dict(lengths=torch.tensor([-1, 2])), "lengths[0] = -1 is outside [0, 3]"),
    "meta input": (dict(input=torch.zeros(3, 2, 3, dtype=torch.float64, device="meta")),
                   "input must be a CPU tensor, got meta"),
    "integer input": (dict(input=torch.zeros(3, 2, 3, dtype=torch.int64)), "input dtype torch.int64 is not supported"),
}


@pytest.mark.parametrize("case", BAD_FORWARD)
def test_bad_forward_input_is_a_clear_error(case):
    changes, fragment = BAD_FORWARD[case]
    with pytest.raises(ValueError, match=re.escape(fragment)):
        bad_forward(**changes)()


# Checks only the C++ backend makes: the lengths' values (which the Python check leaves to each
# backend, so that CUDA does not wait on them), its device and the dtypes it computes in.
CPP_ONLY = {"lengths too long", "negative length", "meta input", "integer input"}


@pytest.mark.parametrize("case", sorted(set(BAD_FORWARD) - CPP_ONLY))
def test_cpp_and_python_checks_say_the_same(case):
    """The C++ kernel's checks and check_layer_arguments (every other backend's and the fake
    kernel's) raise the same type and message: shapes print as Python tuples, dtypes as torch's."""
    changes, _ = BAD_FORWARD[case]
    layer = Layer("lstm", steps=3, batch=2, input_size=3, hidden=4)
    names = ("input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_peep", "lengths", "cell")
    args = {**dict(zip(names, layer.forward_args())), **changes}
    raised = []
    for check in (bad_forward(**changes), lambda: recurrent_ops.check_layer_arguments(*args.values())):
        with pytest.raises(ValueError) as caught:
            check()
        raised.append(str(caught.value).split("\n")[0])
    assert raised[0] == raised[1]


# The kernels' own checks on the dtype and device they compute on do not apply there.
TRANSFORM_CHECKED = sorted(set(BAD_FORWARD) - {"meta input", "integer input"})


@pytest.mark.parametrize("case", TRANSFORM_CHECKED)
def test_torch_func_checks_arguments_as_the_kernels_do(monkeypatch, case):
    """Under a transform the layer runs as ATen ops, after the same checks, lengths' values included."""
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    changes, fragment = BAD_FORWARD[case]
    layer = Layer("lstm", steps=3, batch=2, input_size=3, hidden=4)
    names = ("input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_peep", "lengths", "cell", "reverse")
    args = {**dict(zip(names, layer.forward_args())), **changes}

    def run(w_ih):
        return recurrent_ops.recurrent_layer(**{**args, "w_ih": w_ih})[0]

    with pytest.raises(ValueError, match=re.escape(fragment)):
        torch.func.vjp(run, args["w_ih"])


def bad_backward(**changes):
    layer = Layer("lstm", steps=3, batch=2, input_size=3, hidden=4)
    output, _, _, workspace = _C.recurrent_layer_forward(*layer.forward_args())
    names = ("grad_output", "grad_h_n", "grad_c_n", "input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr",
             "w_peep", "lengths", "output", "workspace", "cell", "reverse", "need_input_grad", "need_weight_grad")
    args = dict(zip(names, layer.backward_args(output, workspace)))
    args.update(changes)
    return lambda: _C.recurrent_layer_backward(*args.values())


BAD_BACKWARD = {
    "grad_output": (dict(grad_output=torch.zeros(3, 2, 5, dtype=torch.float64)),
                    "grad_output must have shape (3, 2, 4), got (3, 2, 5)"),
    "grad_h_n": (dict(grad_h_n=torch.zeros(2, dtype=torch.float64)), "grad_h_n must have shape (2, 4), got (2,)"),
    "grad_c_n missing": (dict(grad_c_n=None), "cell 'lstm' needs grad_c_n of shape (2, 4)"),
    "grad_c_n dtype": (dict(grad_c_n=torch.zeros(2, 4, dtype=torch.float32)), "grad_c_n has dtype torch.float32, but input has torch.float64"),
    "output": (dict(output=torch.zeros(2, 2, 4, dtype=torch.float64)), "output must have shape (3, 2, 4)"),
    "workspace": (dict(workspace=torch.zeros(3, 2, 16, dtype=torch.float64)),
                  "workspace must have shape (3, 2, 20), got (3, 2, 16)"),
    "w_ih": (dict(w_ih=torch.zeros(16, 2, dtype=torch.float64)), "w_ih must have shape (16, 3), got (16, 2)"),
}


@pytest.mark.parametrize("case", BAD_BACKWARD)
def test_bad_backward_input_is_a_clear_error(case):
    changes, fragment = BAD_BACKWARD[case]
    with pytest.raises(ValueError, match=re.escape(fragment)):
        bad_backward(**changes)()
