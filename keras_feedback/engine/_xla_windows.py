"""The fused engine's passes over long or dynamic time axes, by windows.

Short static time axes keep each step's input plus its products for the
backward pass (``KEEP_SUMS_MAX_STEPS``); long or dynamic ones run both
passes by windows (``SEGMENT_STEPS``), keeping only the states entering each
window.
"""

import dataclasses
from typing import NamedTuple

import tensorflow as tf
from tensorflow.compiler.tf2xla.ops import gen_xla_ops

from keras_feedback.engine import _xla_config as config
from keras_feedback.engine import _xla_forward as forward
from keras_feedback.engine import _xla_loops as loops
from keras_feedback.engine import _xla_reverse as reverse
from keras_feedback.engine._xla_config import Forward
from keras_feedback.engine._xla_config import Gradients
from keras_feedback.engine._xla_config import Results
from keras_feedback.engine._xla_config import Saved

# Up to this many (static) time steps, the forward pass keeps each step's
# input plus its deferred products for the backward pass, which then
# recomputes neither (one (B, T, G) tensor kept between the passes); longer
# or dynamic time axes recompute them, to bound memory on long sequences.
KEEP_SUMS_MAX_STEPS = 256
# Longer (or dynamic) time axes run by windows of this many steps: the
# forward pass keeps only the states entering each window; the backward
# pass runs each window again (from its entering states, keeping sums) and
# then in reverse. Memory then grows with the window, not with the sequence
# (beyond the inputs, their gradient and the outputs asked for).
SEGMENT_STEPS = 64


def keeps_sums(cfg, inputs):
    """Whether the forward pass keeps its step inputs plus products (see
    ``KEEP_SUMS_MAX_STEPS``): only with deferred linears and a static time
    axis."""
    time = inputs.shape[1]
    if not cfg.recurrence.deferred or time is None:
        return False
    return time <= KEEP_SUMS_MAX_STEPS


def segment(cfg, inputs):
    """The window length of a loop run by windows (about
    ``SEGMENT_STEPS``), or None: time axes longer than
    ``KEEP_SUMS_MAX_STEPS`` or dynamic, with deferred linears, not
    unrolled."""
    time = inputs.shape[1]
    if not cfg.recurrence.deferred or cfg.steps is not None:
        return None
    if time is None:
        return SEGMENT_STEPS
    if time <= KEEP_SUMS_MAX_STEPS:
        return None
    # A window length that divides the time axis, if one is close: the
    # sequences then need no padded copy.
    for size in range(SEGMENT_STEPS, SEGMENT_STEPS // 2, -1):
        if time % size == 0:
            return size
    return SEGMENT_STEPS


class _Span(NamedTuple):
    """A time axis cut into windows."""

    steps: tf.Tensor  # its length
    count: tf.Tensor  # its windows
    # Its length padded to whole windows, at least one (a compiled window
    # loop reads a window even when it runs none).
    length: tf.Tensor


def _span(cfg, inputs):
    num_steps = tf.shape(inputs)[1]
    count = (num_steps + cfg.segment - 1) // cfg.segment
    return _Span(num_steps, count, tf.maximum(count, 1) * cfg.segment)


def _processing_order(cfg, sequences, length):
    """``sequences`` (``(B, T, ...)`` or None) in the order the loop takes
    the steps, padded (zeros, False) to ``length`` steps."""
    if sequences is None:
        return None
    if cfg.go_backwards:
        sequences = tf.reverse(sequences, [1])
    padding = [[0, 0], [0, length - tf.shape(sequences)[1]]]
    return tf.pad(sequences, padding + [[0, 0]] * (sequences.shape.rank - 2))


def _window(sequences, begin, size):
    """``sequences[:, begin:begin + size]`` (a static ``size``)."""
    if sequences is None:
        return None
    shape = tf.unstack(tf.shape(sequences))
    shape[1] = tf.constant(size)
    return gen_xla_ops.xla_dynamic_slice(
        sequences, loops.start(begin, sequences.shape.rank, axis=1), tf.stack(shape)
    )


def _write_window(buffer, begin, value):
    """``buffer[:, begin:begin + value.shape[1]] = value`` (a buffer kept as
    ``loops.to_storage`` keeps it)."""
    if buffer.dtype == tf.uint16:
        value = loops.to_storage(value)
    return gen_xla_ops.xla_dynamic_update_slice(
        buffer, value, loops.start(begin, buffer.shape.rank, axis=1)
    )


class _Sequences(NamedTuple):
    """The results the window loop writes, batch-major."""

    outputs: list  # [outputs] with return_sequences
    traces: dict


def forward_windows(cfg, params, inputs, keep, states):
    """The forward pass by windows of ``cfg.segment`` steps (raw inputs): a
    ``Forward``.

    Each window's inputs are projected (one matmul) and run by
    ``forward.steps``; what the backward pass needs (``cfg.save``) is the
    state entering each window, ``(B, windows, s)``.
    """
    span = _span(cfg, inputs)
    inputs = _processing_order(cfg, inputs, span.length)
    keep = _processing_order(cfg, keep, span.length)
    window_cfg = dataclasses.replace(
        cfg, go_backwards=False, save=False, keep_sums=False, segment=None
    )
    batch = tf.shape(inputs)[0]
    dtype = config.project(cfg, params, inputs[:, :0]).dtype
    trace_sizes = dict(cfg.traces)

    def zeros(size, length=None):
        return tf.zeros(
            [batch, size] if length is None else [batch, length, size], dtype
        )

    buffers = _Sequences(
        outputs=[zeros(cfg.output_size, span.length)] if cfg.return_sequences else [],
        traces={k: zeros(n, span.length) for k, n in trace_sizes.items()},
    )
    checkpoints = []
    if cfg.save:
        windows = tf.maximum(span.count, 1)
        checkpoints = [
            tf.zeros([batch, windows, tf.shape(s)[-1]], s.dtype) for s in states
        ]
    start = forward.Held(
        zeros(cfg.output_size), {k: zeros(n) for k, n in trace_sizes.items()}
    )

    def body(j, states, start, buffers, checkpoints):
        begin = j * cfg.segment
        ran = forward.steps(
            window_cfg,
            params,
            config.project(cfg, params, _window(inputs, begin, cfg.segment)),
            _window(keep, begin, cfg.segment),
            states,
            num_steps=tf.minimum(cfg.segment, span.steps - begin),
            start=start,
        )
        values = _Sequences(
            outputs=[ran.results.outputs] if cfg.return_sequences else [],
            traces=ran.results.traces,
        )
        buffers = tf.nest.map_structure(
            lambda b, v: _write_window(b, begin, v), buffers, values
        )
        checkpoints = [
            loops.write_batch_major(c, j, s) for c, s in zip(checkpoints, states)
        ]
        return j + 1, ran.results.states, ran.held, buffers, checkpoints

    stored = tf.nest.map_structure(loops.to_storage, (buffers, checkpoints))
    loop_vars = (tf.constant(0), list(states), start, *stored)
    _, states, held, buffers, checkpoints = loops.while_loop(
        lambda j, *_: j < span.count, body, loop_vars
    )
    buffers, checkpoints = tf.nest.map_structure(
        loops.from_storage, (buffers, checkpoints)
    )
    buffers = tf.nest.map_structure(lambda b: b[:, : span.steps], buffers)
    results = Results(
        outputs=buffers.outputs[0] if cfg.return_sequences else None,
        last_output=held.output,
        states=list(states),
        traces=buffers.traces,
    )
    return Forward(results, Saved(entering=checkpoints, sums=None, products=[]))


def backward_windows(cfg, params, inputs, keep, states, saved, upstream):
    """``reverse.backward`` by windows of ``cfg.segment`` steps, last window
    first: a ``Gradients``.

    ``saved`` holds the states entering each window. Each window runs its
    steps again from there, keeping their inputs plus products
    (``keep_sums``), and then runs the reverse loop, the deferred kernels'
    matmuls and the projection's VJP on the window alone. Memory: a few
    window-sized buffers instead of whole-sequence ones; cost: the window's
    forward matmuls once more, which the whole-sequence reverse loop
    recomputes anyway without kept sums.
    """
    span = _span(cfg, inputs)
    size = cfg.segment
    inputs = _processing_order(cfg, inputs, span.length)
    keep = _processing_order(cfg, keep, span.length)
    # The output and trace cotangents are in processing order already.
    pad = dataclasses.replace(cfg, go_backwards=False)
    g_outputs = _processing_order(pad, upstream.outputs, span.length)
    g_traces = {
        k: _processing_order(pad, g, span.length) for k, g in upstream.traces.items()
    }
    window_cfg = dataclasses.replace(
        cfg, go_backwards=False, keep_sums=True, segment=None
    )
    forward_cfg = dataclasses.replace(
        window_cfg, save=True, return_sequences=False, traces=()
    )
    leaves = tf.nest.flatten(params)

    def body(j, carry, totals, d_inputs):
        begin = j * size
        steps = tf.minimum(size, span.steps - begin)
        x = _window(inputs, begin, size)
        kept = _window(keep, begin, size)
        ran = forward.steps(
            forward_cfg,
            params,
            config.project(cfg, params, x),
            kept,
            [c[:, j] for c in saved.entering],
            num_steps=steps,
        )
        window = ran.saved
        carry = carry._replace(
            summed=config.accumulators(leaves, config.summed(window_cfg, params))
        )
        carry, d_step = reverse.reverse(
            window_cfg,
            params,
            reverse.StepInputs(window.sums, list(window.products)),
            window.entering,
            kept,
            _window(g_outputs, begin, size),
            {k: _window(g, begin, size) for k, g in g_traces.items()},
            carry,
            num_steps=steps,
        )
        d_x, d_sums = reverse.gradients(
            window_cfg, params, x, window.entering, carry.summed, d_step
        )
        totals = [a + d for a, d in zip(totals, d_sums)]
        if cfg.input_gradient:
            d_inputs = _write_window(d_inputs, begin, d_x)
        return j - 1, carry, totals, d_inputs

    carry = reverse.Cotangents(
        states=list(upstream.states),
        output=upstream.last_output,
        traces=reverse.zero_traces(cfg, g_traces),
        summed=config.accumulators(leaves, config.summed(window_cfg, params)),
    )
    totals = [tf.zeros_like(leaf, config.sum_dtype(leaf.dtype)) for leaf in leaves]
    d_inputs = tf.zeros_like(inputs) if cfg.input_gradient else tf.zeros([])
    loop_vars = (span.count - 1, carry, totals, loops.to_storage(d_inputs))
    _, carry, totals, d_inputs = loops.while_loop(lambda j, *_: j >= 0, body, loop_vars)
    d_inputs = loops.from_storage(d_inputs)
    if not cfg.input_gradient:
        d_inputs = None
    else:
        d_inputs = d_inputs[:, : span.steps]
        if cfg.go_backwards:
            d_inputs = tf.reverse(d_inputs, [1])
    return Gradients(
        d_inputs, list(carry.states), config.leaf_gradients(leaves, totals)
    )
