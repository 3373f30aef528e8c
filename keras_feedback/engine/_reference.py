"""The reference recurrence: a ``tf.while_loop`` over time, plain autodiff.

It knows nothing about any cell: it runs ``step_fn(params, x_t, states)`` and
writes each step's output into a preallocated time-major tensor with
``tf.tensor_scatter_nd_update`` (no TensorArray/TensorList op in the forward
graph, so the same loop converts to LiteRT's builtin ``WHILE``). Where a
gradient tape may record the loop (training), it writes into a
``tf.TensorArray`` instead: the gradient of a scatter into the whole buffer
carries the whole buffer through every step, as the gradient of a read of
the inputs by index does (quadratic in the length: docs/engine.md,
"Measurements behind the code", M1), a TensorArray's one step. There, too, each step
projects its own input (``recurrence.project`` of one step), as Keras's
loop does: the gradient of a TensorArray read is a list of the whole
length, built and summed at every step (``TensorListGetItem``'s gradient),
which a read of the raw inputs does not need where they take no gradient
(a model's inputs; M2).
It is kept simple on purpose: it is the oracle for the fused XLA engine.
"""

import tensorflow as tf
from tensorflow.python.eager import record

from keras_feedback.engine import _masking


def _write(buffer, t, value, rows):
    # One (t, row) index per batch row (``rows``: ``range(batch)``, made once
    # outside the loop) rather than [[t]]: a scatter into an empty buffer is
    # an error unless it has no indices, so batch 0 works.
    indices = tf.stack([tf.fill(tf.shape(rows), t), rows], axis=1)
    return tf.tensor_scatter_nd_update(buffer, indices, value)


def _projecting(recurrence):
    # The step of one raw input: project it, then step.
    def step_fn(params, x_t, states):
        return recurrence.step(params, recurrence.project(params, x_t), states)

    return step_fn


def run(
    recurrence,
    params,
    inputs,
    initial_states,
    *,
    mask=None,
    go_backwards=False,
    return_sequences=True,
    zero_output_for_mask=False,
    unroll=False,
    return_trace=False,
    per_example=None,
):
    """Runs ``recurrence`` over the time axis of ``inputs``.

    Args:
        recurrence: the cell's ``Recurrence`` (``_contract``).
        params: a structure of tensors passed unchanged to every step.
        inputs: ``(B, T, ...)`` sequences, which ``recurrence.project``
            projects to the per-step inputs, all at once or, under a tape,
            step by step (or, without ``project``, the per-step inputs
            ``(B, T, ...)``).
        initial_states: list of ``(B, s)`` tensors.
        mask: optional ``(B, T)`` boolean; a masked step keeps the previous
            states and output (zeros when ``zero_output_for_mask``), see
            ``_masking``.
        go_backwards: process time in reverse; outputs are returned in the
            order they were computed, as Keras does.
        return_sequences: keep every step's output, or only the last.
        unroll: a Python loop over a static time axis instead of a while loop.
        return_trace: record ``recurrence.trace_sizes`` at every step.
        per_example: accepted for the engines' common signature (see the
            fused engine); this engine always runs one loop.

    Returns:
        ``(outputs, last_output, final_states, traces)``: ``outputs`` is
        ``(B, T, output_size)`` or None, ``traces`` a dict of ``(B, T, k)``.
    """
    trace_sizes = recurrence.traces(return_trace)
    output_size = recurrence.output_size
    step_fn = recurrence.step
    # A TensorArray where a gradient may be recorded (see the module
    # docstring); unrolled, each step's output is a tensor of its own,
    # stacked at the end (no scatter: a loop-free graph that LiteRT's 16x8
    # quantizer takes).
    arrays = not unroll and record.could_possibly_record()
    if recurrence.project is not None and arrays:
        step_fn = _projecting(recurrence)
    elif recurrence.project is not None:
        inputs = recurrence.project(params, inputs)
    dtype = inputs.dtype
    steps = tf.transpose(inputs, [1, 0, *range(2, inputs.shape.rank)])
    keep_steps = None
    if mask is not None:
        # expand_dims, not [..., None]: LiteRT has no builtin StridedSlice on
        # bool tensors.
        keep_steps = tf.expand_dims(tf.transpose(tf.cast(mask, tf.bool), [1, 0]), -1)
    if go_backwards:
        steps = tf.reverse(steps, [0])
        if keep_steps is not None:
            keep_steps = tf.reverse(keep_steps, [0])
    num_steps = tf.shape(steps)[0]
    batch = tf.shape(steps)[1]
    rows = None if unroll else tf.range(batch)

    def zeros(size, time=False):
        if time and unroll:
            return ()
        if time and arrays:
            return tf.TensorArray(
                dtype, size=num_steps, element_shape=tf.TensorShape([None, size])
            )
        shape = [num_steps, batch, size] if time else [batch, size]
        return tf.zeros(shape, dtype)

    def write(buffer, t, value):
        if unroll:
            return (*buffer, value)
        return buffer.write(t, value) if arrays else _write(buffer, t, value, rows)

    def stacked(buffer, size):
        if unroll:
            return tf.stack(buffer) if buffer else tf.zeros([0, batch, size], dtype)
        if not arrays:
            return buffer
        # A list of no element cannot stack with an unknown batch size.
        if inputs.shape[1] is not None:
            return (
                buffer.stack() if inputs.shape[1] else tf.zeros([0, batch, size], dtype)
            )
        return tf.cond(
            num_steps > 0, buffer.stack, lambda: tf.zeros([0, batch, size], dtype)
        )

    last_output = zeros(output_size)
    outputs = zeros(output_size, time=True) if return_sequences else ()
    traces = {k: zeros(n, time=True) for k, n in trace_sizes.items()}
    last_trace = {k: zeros(n) for k, n in trace_sizes.items()}
    states = list(initial_states)

    # Read through a TensorArray too: the gradient of ``steps[t]`` (a slice of
    # a tensor the loop captures) is a zero tensor of the whole sequence per
    # step, a TensorArray read's one step.
    inputs_at = steps.__getitem__
    if arrays:
        inputs_at = tf.TensorArray(dtype, size=num_steps).unstack(steps).read

    def body(t, last_output, states, outputs, traces, last_trace):
        output, new_states, trace = step_fn(params, inputs_at(t), states)
        trace = {k: trace[k] for k in trace_sizes}
        if keep_steps is not None:
            keep = keep_steps[t]
            new_states = _masking.keep(keep, list(new_states), states)
            output = _masking.output(keep, output, last_output, zero_output_for_mask)
            trace = _masking.keep(keep, trace, last_trace)
        if return_sequences:
            outputs = write(outputs, t, output)
        traces = {k: write(traces[k], t, trace[k]) for k in traces}
        return t + 1, output, list(new_states), outputs, traces, trace

    carry = (0, last_output, states, outputs, traces, last_trace)
    if unroll:
        if inputs.shape[1] is None:
            raise ValueError(
                "unroll=True needs a static time dimension, got input shape "
                f"{tuple(inputs.shape)}"
            )
        for t in range(inputs.shape[1]):
            carry = body(t, *carry[1:])
    else:
        carry = tf.while_loop(
            lambda t, *_: t < num_steps, body, carry, parallel_iterations=32
        )
    _, last_output, states, outputs, traces, _ = carry
    if return_sequences:
        outputs = tf.transpose(stacked(outputs, output_size), [1, 0, 2])
    else:
        outputs = None
    traces = {
        k: tf.transpose(stacked(v, trace_sizes[k]), [1, 0, 2])
        for k, v in traces.items()
    }
    return outputs, last_output, list(states), traces
