"""Fake quantisation of the step math, as LiteRT's int8 kernels compute it.

Quantization-aware training (``keras_feedback.quantization``) runs the step
with the rounding its full-integer LiteRT file will do: every tensor that an
int8 kernel writes is rounded to its 8-bit grid (``FakeQuantWithMinMaxVars``,
whose gradient is the straight-through one: 1 inside the range, 0 outside),
and every kernel to its symmetric 8-bit grid. The LiteRT converter reads the
same FakeQuant ops as the scales of the int8 file, so the file computes what
the QAT model computes, to the rounding of its kernels.

Where the roundings go. The step math writes its arithmetic with plain
TensorFlow ops (a core's gates are ``tf.sigmoid(x_z + r_z)``, ...): rather
than a call at each of them, ``scope`` hooks the creation of ops while the
step is traced (TensorFlow's op callbacks) and puts a FakeQuant after every
op of ``QUANTIZED_OPS`` with a float32 output: one quantisation point per op,
numbered in the order the step creates them, which is the same in every
trace of one spec (the engines, ``step``, the exports), since the step's
Python code has no branch on tensors. The points that are not ops' outputs
are explicit (``point``): the layer's input (row 0) and the projected input
after its bias (row 1: LiteRT's ``FULLY_CONNECTED`` with its bias). The
states a step reads are rounded on the grid of the point that wrote them.

Ranges. A cell's ``quantization_ranges`` variable holds ``(min, max)`` per
point (rows ``0``, ``1``, then the op points), observed on data by
``keras_feedback.quantization`` (an ``Observer``) and frozen in the exported
file; ``LOGISTIC`` and ``TANH`` outputs have the fixed ranges of LiteRT's
int8 kernels (scale 1/256 with zero point -128, 1/128 with 0).
"""

import contextlib
import dataclasses
import threading
from typing import Optional
from typing import Tuple

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_callbacks

# Op types whose float outputs an int8 kernel writes in the LiteRT file:
# FULLY_CONNECTED, ADD, SUB, MUL, LOGISTIC, TANH, RELU.
QUANTIZED_OPS = frozenset(
    {"MatMul", "BatchMatMulV2", "AddV2", "Add", "Sub", "Mul", "Sigmoid", "Tanh", "Relu"}
)
# The fixed output ranges of LiteRT's int8 LOGISTIC and TANH kernels, as
# FakeQuant ranges of 256 levels: [0, 255/256] (scale 1/256, zero point
# -128) and [-1, 127/128] (scale 1/128, zero point 0).
FIXED_RANGES = {"Sigmoid": (0.0, 255.0 / 256.0), "Tanh": (-1.0, 127.0 / 128.0)}
INPUT, PROJECTION = 0, 1  # the explicit points' rows
FIRST_OP_POINT = 2
# A range narrower than this is widened to it (a point that is always zero).
MIN_WIDTH = 1e-3
# Observed ranges are widened by this fraction of their width on each side
# that is not 0 (see ``merge``).
RANGE_MARGIN = 1e-4

_local = threading.local()


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """The quantisation points of a cell's step (found by ``discover``).

    Attributes:
        kinds: the op type of each op point, in order (rows 2, 3, ...).
        state_points: for each state, the row of the point that writes it.
    """

    kinds: Optional[Tuple[str, ...]] = None
    state_points: Optional[Tuple[int, ...]] = None
    # Per op point, the row whose range it takes: its own, or that of the
    # ReLU that reads it alone (LiteRT fuses the ReLU into the op, whose
    # output then has the ReLU's range).
    ranges_of: Optional[Tuple[int, ...]] = None

    @property
    def points(self):
        return FIRST_OP_POINT + len(self.kinds)

    def initial_ranges(self):
        """``(points, 2)``: the fixed ranges, ``[-1, 1]`` elsewhere (until
        observed)."""
        ranges = np.tile(np.array([[-1.0, 1.0]], np.float32), (self.points, 1))
        for i, kind in enumerate(self.kinds):
            if kind in FIXED_RANGES:
                ranges[FIRST_OP_POINT + i] = FIXED_RANGES[kind]
        return ranges

    def observed_rows(self):
        """The rows whose ranges are observed (not fixed)."""
        fixed = {
            FIRST_OP_POINT + i for i, k in enumerate(self.kinds) if k in FIXED_RANGES
        }
        return [row for row in range(self.points) if row not in fixed]


def fake_quant(x, bounds):
    """``x`` on the 8-bit grid of ``bounds`` ``(min, max)``; gradient: the
    straight-through one (1 inside the range, 0 outside; none to the
    range)."""
    bounds = tf.stop_gradient(tf.cast(bounds, tf.float32))
    return tf.quantization.fake_quant_with_min_max_vars(
        x, bounds[0], bounds[1], num_bits=8, narrow_range=False
    )


def fake_quant_fixed(x, kind):
    """``x``, the output of a sigmoid or tanh (``kind``: ``"Sigmoid"``,
    ``"Tanh"``), on the fixed grid of LiteRT's int8 kernel; gradient: the
    identity (the kernel rounds its output there; its top level is a
    rounding of the saturated function, not a clip of a range, and the
    function's own slope is below 1/128 there)."""
    bounds = tf.constant(FIXED_RANGES[kind], tf.float32)
    return _straight_through(x, lambda x: fake_quant(x, bounds))


def _straight_through(x, rounding):
    """``rounding(x)`` with the identity for its gradient (a FakeQuant op in
    the graph, which the converter reads)."""

    @tf.custom_gradient
    def rounded(x):
        def grad(upstream):
            return upstream

        return rounding(x), grad

    return rounded(x)


def fake_quant_weight(kernel):
    """``kernel`` on the converter's int8 weight grid: symmetric, narrow
    range (-127..127), one scale per tensor (LiteRT's QAT conversion of a
    ``FULLY_CONNECTED`` takes a per-tensor weight range). Gradient: the
    identity (the range is the kernel's own: no weight lies outside it,
    though FakeQuant's nudged bounds may leave its largest one out by a
    rounding, differently on XLA and TensorFlow's kernels)."""

    def rounding(kernel):
        bound = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(kernel)), 1e-6))
        return tf.quantization.fake_quant_with_min_max_vars(
            kernel, -bound, bound, num_bits=8, narrow_range=True
        )

    return _straight_through(kernel, rounding)


def fake_quant_constant(values):
    """``values`` (a vector weight that an ``ADD`` or ``MUL`` reads, as
    IndRNN's recurrent weight) on the grid LiteRT's converter gives such a
    constant: its own range, holding 0, 256 levels."""

    def rounding(values):
        low = tf.stop_gradient(tf.minimum(tf.reduce_min(values), 0.0))
        high = tf.stop_gradient(tf.maximum(tf.reduce_max(values), low + MIN_WIDTH))
        return tf.quantization.fake_quant_with_min_max_vars(
            values, low, high, num_bits=8, narrow_range=False
        )

    return _straight_through(values, rounding)


class Observer:
    """Records the range of every point while ``observing`` is active, in
    a graph (a traced function returns ``vectors``; TensorFlow's eager fast
    path ignores an op callback's replacements, so quantised steps run in
    graphs only).

    ``quantize=False``: the step runs in float (the first observation, of
    the float model); True: with the current ranges (later ones, as TF-MOT's
    moving-average quantizers observe the QAT model).
    """

    def __init__(self, quantize):
        self.quantize = quantize
        self.low = {}
        self.high = {}

    def record(self, row, x):
        low, high = tf.reduce_min(x), tf.reduce_max(x)
        if row in self.low:
            low, high = tf.minimum(low, self.low[row]), tf.maximum(high, self.high[row])
        self.low[row], self.high[row] = low, high

    def vectors(self, points):
        """``(low, high)``, ``(points,)`` each: what was recorded per row
        (+inf and -inf where nothing was)."""
        inf = tf.constant(np.inf, tf.float32)
        low = [self.low.get(row, inf) for row in range(points)]
        high = [self.high.get(row, -inf) for row in range(points)]
        return tf.stack(low), tf.stack(high)


def merge(old, rows, low, high, momentum):
    """``old`` ``(points, 2)`` with each of ``rows`` moved towards the
    observed ``[low, high]`` (``momentum`` 0: replaced), each range holding
    0 and at least ``MIN_WIDTH`` wide; rows observed nowhere kept."""
    new = np.array(old, np.float32)
    for row in rows:
        if not np.isfinite(low[row]) or not np.isfinite(high[row]):
            continue
        lo, hi = min(float(low[row]), 0.0), max(float(high[row]), 0.0)
        if hi - lo < MIN_WIDTH:
            hi = lo + MIN_WIDTH
        # The extremes seen stay inside the range rather than on its bounds,
        # where XLA's and TensorFlow's FakeQuant kernels may disagree by a
        # rounding on whether they are clipped (the gradient's mask).
        margin = RANGE_MARGIN * (hi - lo)
        lo, hi = (lo - margin if lo < 0 else lo), hi + margin
        new[row] = momentum * new[row] + (1.0 - momentum) * np.array([lo, hi])
    return new


@contextlib.contextmanager
def observing(observer):
    """Makes ``observer`` record the points of the steps run eagerly."""
    previous = getattr(_local, "observer", None)
    _local.observer = observer
    try:
        yield observer
    finally:
        _local.observer = previous


def _observer():
    return getattr(_local, "observer", None)


def float_observation():
    """Whether the step runs in float for an ``Observer``."""
    observer = _observer()
    return observer is not None and not observer.quantize


def inline():
    """Whether a quantised step runs inline rather than as its own traced
    function: while an ``Observer`` records (no gradient is taken, and the
    recorded tensors must stay in its graph) or ``discover`` traces."""
    return _observer() is not None or getattr(_local, "discovering", False)


def point(x, ranges, row):
    """An explicit quantisation point: ``x`` on the grid of ``ranges[row]``
    (recorded when observing; left in float by a float observation)."""
    observer = _observer()
    if observer is not None:
        observer.record(row, x)
        if not observer.quantize:
            return x
    return fake_quant(x, ranges[row])


def fixed(x, kind):
    """``x``, the output of a sigmoid (``kind`` ``"sigmoid"``) or tanh, on
    the fixed grid of LiteRT's int8 kernel (left in float by a float
    observation)."""
    observer = _observer()
    if observer is not None and not observer.quantize:
        return x
    return fake_quant_fixed(x, {"sigmoid": "Sigmoid", "tanh": "Tanh"}[kind])


def states_in(quant, ranges, states):
    """The states a step reads, on the grids of the points that wrote them."""
    observer = _observer()
    if quant.state_points is None or (observer is not None and not observer.quantize):
        return list(states)
    # The identity gradient: a state is on this grid already (its top level
    # may sit on FakeQuant's nudged bound, which XLA's and TensorFlow's
    # kernels round differently).
    return [
        _straight_through(s, lambda s, row=row: fake_quant(s, ranges[row]))
        for s, row in zip(states, quant.state_points)
    ]


def active():
    """Whether a step is being quantised (``linear`` then rounds its
    kernel)."""
    return getattr(_local, "recorder", None) is not None


def weight(kernel, force=False):
    """``kernel`` rounded when a step is being quantised, or ``force``
    (and not in a float observation); else as it is."""
    observer = _observer()
    if not (force or active()) or (observer is not None and not observer.quantize):
        return kernel
    return fake_quant_weight(kernel)


class _Recorder:
    """The op callback of ``scope``: a FakeQuant after every quantised op."""

    def __init__(self, quant, ranges):
        self.quant = quant
        self.ranges = ranges
        self.kinds = []
        self.rows = {}  # id of a point's output tensor -> its row
        self.outputs = {}  # row -> the point's output (``discover``)
        self.relu_inputs = {}  # a ReLU's row -> the row of the point it reads

    def __call__(self, op_type, inputs, attrs, outputs, op_name=None, graph=None):
        if (
            op_type not in QUANTIZED_OPS
            or len(outputs) != 1
            or outputs[0].dtype != tf.float32
        ):
            return None
        index = len(self.kinds)
        kinds = self.quant.kinds
        if kinds is not None and (index >= len(kinds) or kinds[index] != op_type):
            raise RuntimeError(
                f"keras_feedback: the quantised step created op {op_type!r} as "
                f"point {index}, where its spec has "
                f"{kinds[index] if index < len(kinds) else 'no point'}: the step "
                "traced differently from when its points were found. This is "
                "a bug of keras_feedback: please report it."
            )
        self.kinds.append(op_type)
        row = FIRST_OP_POINT + index
        x = outputs[0]
        if op_type == "Relu" and id(inputs[0]) in self.rows:
            self.relu_inputs[row] = self.rows[id(inputs[0])]
        observer = _observer()
        if observer is not None:
            observer.record(row, x)
            if not observer.quantize:
                self.rows[id(x)] = row
                return None
        if op_type in FIXED_RANGES:
            quantized = fake_quant_fixed(x, op_type)
            self.rows[id(quantized)] = row
            self.outputs[row] = quantized
            return [quantized]
        if self.ranges is None:
            bounds = tf.constant([-1.0, 1.0], tf.float32)
        else:
            ranges_of = self.quant.ranges_of
            bounds = self.ranges[row if ranges_of is None else ranges_of[index]]
        quantized = fake_quant(x, bounds)
        self.rows[id(quantized)] = row
        self.outputs[row] = quantized
        return [quantized]


@contextlib.contextmanager
def scope(quant, ranges):
    """Quantises the ops the step creates inside it (see the module
    docstring); ``quant`` None: does nothing. Yields the recorder (its
    ``kinds`` and ``rows``), or None."""
    if quant is None:
        yield None
        return
    recorder = _Recorder(quant, ranges)
    previous = getattr(_local, "recorder", None)
    _local.recorder = recorder
    _local.last = recorder  # what ``discover`` reads
    op_callbacks.add_op_callback(recorder)
    try:
        yield recorder
    finally:
        op_callbacks.remove_op_callback(recorder)
        _local.recorder = previous


def discover(step, spec, param_shapes, width, state_sizes):
    """The ``QuantSpec`` of ``spec``'s step: traces ``step(spec, params,
    projected, states)`` once in a scratch graph, counting its points, and
    returns the op types of its points and, per state, the row of the point
    that writes it.

    Raises:
        ValueError: a state that no quantised op writes (the step model could
            not keep it on an int8 grid).
    """
    counting = dataclasses.replace(spec, quantization=QuantSpec())
    found = {}

    def trace(params, projected, states):
        _, new_states, _ = step(counting, params, projected, list(states))
        recorder = _local.last
        found["kinds"] = tuple(recorder.kinds)
        found["states"] = [recorder.rows.get(id(s)) for s in new_states]
        ranges_of = list(range(FIRST_OP_POINT, FIRST_OP_POINT + len(recorder.kinds)))
        for relu, source in recorder.relu_inputs.items():
            if len(recorder.outputs[source].consumers()) == 1:
                ranges_of[source - FIRST_OP_POINT] = relu
        found["ranges_of"] = tuple(ranges_of)
        return new_states

    signature = (
        {n: tf.TensorSpec(s, tf.float32) for n, s in param_shapes.items()},
        tf.TensorSpec((None, width), tf.float32),
        [tf.TensorSpec((None, size), tf.float32) for size in state_sizes],
    )
    _local.discovering = True
    try:
        tf.function(trace, autograph=False).get_concrete_function(*signature)
    finally:
        _local.discovering = False
    missing = [i for i, row in enumerate(found["states"]) if row is None]
    if missing:
        raise ValueError(
            f"quantization='int8': states {missing} of the step are not written "
            "by an op that LiteRT's int8 kernels quantize"
        )
    return QuantSpec(
        kinds=found["kinds"],
        state_points=tuple(found["states"]),
        ranges_of=found["ranges_of"],
    )
