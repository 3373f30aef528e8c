"""The fused recurrence: XLA-compiled forward loop, XLA-compiled backward loop.

Same contract as ``keras_feedback.engine._reference.run``; it differs in how
the loop runs and how it is differentiated:

- ``project`` (the input projection of all steps, one large matmul) runs
  before the forward loop; the loop is one ``tf.function(jit_compile=True)``
  that writes the outputs and the state *entering* every step into
  preallocated tensors (in-place dynamic-update-slices); nothing is a
  TensorArray/TensorList. With no gradient tape recording (inference) it
  writes no states.
- a ``tf.custom_gradient`` replaces autodiff through the loop (which would
  build TensorList accumulators XLA cannot size). Its backward pass is one
  compiled function: it recomputes the projection (rather than keep it
  between the passes) into a ``(B, T, G)`` buffer, runs time in reverse and,
  at every step, recomputes the step from the saved entering state under a
  ``tf.GradientTape`` and takes its vector-Jacobian product. The gradient of
  the step's input replaces that input in the same buffer; the gradient of
  its entering states goes to the previous step; parameter gradients are
  summed (float32 under mixed precision). Kernels whose product the step
  adds to its input (``step_fn.deferred``: the recurrent kernel of the
  simple and LSTM cores, ``U_c``) get their gradient after the loop, as one
  ``(in, B*T) x (B*T, G)`` matmul of the saved states and the input
  gradient, as do the projection's weights and inputs (its VJP). It is
  generic over ``step_fn``: no cell has a hand-written backward pass.
  Short static time axes keep each step's input plus products instead
  (``KEEP_SUMS_MAX_STEPS``); long or dynamic ones run both passes by windows
  (``SEGMENT_STEPS``), keeping only the states entering each window.
- on CPU the batch is split into ``shard_count`` parts, each its own pair of
  compiled calls, which TensorFlow's executor runs side by side on the
  cores: XLA:CPU runs one loop on one core.

Masked steps, ``go_backwards``, traces, initial states and every parameter
(a recurrent dropout mask included) get their gradients. XLA compiles each
loop once per distinct input shape (batch, time); ``pad_time`` and
``docs/engine.md`` say how to bound recompilations.
"""

import dataclasses
import functools
import os
from typing import Callable
from typing import Optional

import tensorflow as tf
from tensorflow.compiler.tf2xla.ops import gen_xla_ops
from tensorflow.python.eager import record

_HALF = (tf.float16, tf.bfloat16)
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
# Per-step products with kernels of at least this many weights run
# feature-major (``_feature_major_matmul``). Measured, B=64 on 2 cores,
# predict / train per batch: GRU 512 units (512 x 1536) 56.0 -> 53.9 /
# 184 -> 161 ms, LSTM 512 83.3 -> 69.4 / 235 -> 202 ms, simple 1024 units
# 102 -> 59 / 229 -> 173 ms; below it the transposes cost about what they
# save (simple 512, LSTM 256: 4-9% slower predict, 3-6% faster training;
# GRU 256: 5% slower).
FEATURE_MAJOR_MIN_WEIGHTS = 512 * 1024
# Batch shards run side by side on CPU (see ``shard_count``).
MAX_SHARDS = 8
MIN_SHARD_ROWS = 8


@dataclasses.dataclass(frozen=True)
class _Config:
    """Everything static about one loop: the key of the compiled functions."""

    step_fn: Callable
    output_size: int
    go_backwards: bool
    return_sequences: bool
    zero_output_for_mask: bool
    traces: tuple  # ((name, size), ...) of the recorded per-step traces
    steps: Optional[int]  # static time for unroll=True, else None
    save: bool = True  # write the states entering every step (for backward)
    project: Optional[Callable] = None  # project(params, inputs), see ``run``
    # Keep each step's input plus its deferred products for the backward
    # pass (which then recomputes neither); see ``run``.
    keep_sums: bool = False
    # Run (and differentiate) the loop by windows of this many steps; see
    # ``SEGMENT_STEPS``.
    segment: Optional[int] = None
    # Whether the backward pass computes the inputs' gradient (not when no
    # tape records the inputs, e.g. a model's own inputs in training).
    input_gradient: bool = True


def _start(t, rank, axis=0):
    """Start indices of a dynamic-update-slice at ``t`` on ``axis``."""
    zero = tf.zeros([], tf.int32)
    t = tf.cast(t, tf.int32)
    return tf.stack([t if a == axis else zero for a in range(rank)])


def _write(buffer, t, value):
    """``buffer[t] = value``: an in-place dynamic-update-slice (also for an
    empty batch, where a scatter does not compile)."""
    return gen_xla_ops.xla_dynamic_update_slice(
        buffer, value[None], _start(t, buffer.shape.rank)
    )


def _write_batch_major(buffer, t, value):
    """``buffer[:, t] = value`` for a ``(B, T, ...)`` buffer."""
    return gen_xla_ops.xla_dynamic_update_slice(
        buffer, tf.expand_dims(value, 1), _start(t, buffer.shape.rank, axis=1)
    )


def _time_major(x):
    return tf.transpose(x, [1, 0, 2])


def _relaxed(shape):
    """``shape`` with every axis but the last unknown."""
    if not shape.rank:
        return shape
    return tf.TensorShape([None] * (shape.rank - 1) + shape[-1:])


def _loop(
    num_steps,
    read,
    body,
    carry,
    buffers,
    index,
    steps=None,
    writers=None,
    pipelined=True,
):
    """Runs ``body`` for ``t`` in ``range(num_steps)``; returns carry, buffers.

    ``read(t, buffers)`` slices step ``t``'s inputs out of whole-sequence
    tensors (``buffers`` as they are when step ``t`` starts: a buffer may
    hold the inputs that its own writes replace, step by step);
    ``body(t, current, carry) -> (carry, values)``; ``values[k]`` is written
    into ``buffers[k]`` at index ``index(t)[k]`` by ``writers[k]`` (default
    ``_write``, along the first axis).

    ``pipelined``: the while loop reads one step ahead and writes one step
    behind, carrying the slices and the values. XLA:CPU does not vectorize
    an elementwise fusion that also holds a dynamic slice of a tensor the
    loop only reads, and fuses exactly those unless a loop boundary
    separates them (measured: a GRU step ran 2.5x slower). The last write
    then falls after the loop, where XLA copies the whole buffer first (one
    more buffer of its size); an extra iteration that only writes keeps it
    in the loop. Not pipelined, a step reads and writes in place: right for
    a buffer whose step ``t`` is read and then replaced by its write (XLA
    keeps the read out of the step's fusions there). ``steps`` (static)
    unrolls the loop instead.
    """
    buffers = list(buffers)
    writers = writers or [_write] * len(buffers)

    def write(buffers, indices, values):
        return [w(b, i, v) for w, b, i, v in zip(writers, buffers, indices, values)]

    def indices(t):
        return [tf.convert_to_tensor(i, tf.int32) for i in index(t)]

    if steps is not None:
        for t in range(steps):
            carry, values = body(t, read(t, buffers), carry)
            buffers = write(buffers, index(t), values)
        return carry, buffers

    if pipelined:

        def iteration(t, current, carry, buffers, pending_index, pending):
            buffers = write(buffers, pending_index, pending)

            def run_step():
                carry_out, values = body(t, current, carry)
                return carry_out, list(values)

            # The extra last iteration (t == num_steps) only writes.
            carry, values = tf.cond(
                t < num_steps, run_step, lambda: (carry, list(pending))
            )
            ahead = read(tf.minimum(t + 1, num_steps - 1), buffers)
            return t + 1, ahead, carry, buffers, indices(t), values

        # The first write (zeros at step 0's index) is overwritten a step
        # later.
        loop_vars = (
            tf.constant(0),
            read(0, buffers),
            carry,
            buffers,
            indices(0),
            [
                tf.zeros_like(b[0] if w is _write else b[:, 0])
                for w, b in zip(writers, buffers)
            ],
        )
        last = num_steps
    else:

        def iteration(t, carry, buffers):
            carry, values = body(t, read(t, buffers), carry)
            return t + 1, carry, write(buffers, indices(t), values)

        loop_vars = (tf.constant(0), carry, buffers)
        last = num_steps - 1
    results = _while(lambda t, *_: t <= last, iteration, loop_vars)
    if pipelined:
        return results[2], results[3]
    return results[1], results[2]


def _while(cond, body, loop_vars):
    """``tf.while_loop`` whose loop variables keep only their last axis'
    static size: static shapes can be sharper before the first iteration
    than for any; XLA knows every shape when it compiles."""
    invariants = tf.nest.map_structure(lambda x: _relaxed(x.shape), loop_vars)

    def shaped_body(*loop_vars):
        loop_vars = body(*loop_vars)
        for x, shape in zip(tf.nest.flatten(loop_vars), tf.nest.flatten(invariants)):
            x.set_shape(shape)
        return loop_vars

    return tf.while_loop(cond, shaped_body, loop_vars, shape_invariants=invariants)


def _barrier(x):
    """``x``, which XLA may not fold into its neighbours (a layout kept)."""
    return gen_xla_ops.xla_optimization_barrier([x])[0]


def _feature_major(kernel):
    """Whether a per-step product with ``kernel`` runs feature-major."""
    size = kernel.shape.num_elements()
    return size is not None and size >= FEATURE_MAJOR_MIN_WEIGHTS


def _feature_major_matmul(matrix, a):
    """``a @ matrix^T`` for ``(B, n)`` ``a``, as ``(matrix @ a^T)^T``.

    XLA:CPU runs a ``(m, n) x (n, B)`` product with the batch as the minor
    axis faster than the ``(B, n) x (n, m)`` one (single core, B=32, n=512:
    165 vs 121 GFLOP/s at m=1536); left to itself it folds the transposes
    into the product and picks the slower form, so barriers keep them.
    """
    a_t = _barrier(tf.transpose(a))
    return tf.transpose(_barrier(tf.matmul(matrix, a_t)))


def _input_index(cfg, num_steps, t):
    """The input time index that processing step ``t`` reads."""
    return num_steps - 1 - t if cfg.go_backwards else t


def _floating(leaves):
    return [i for i, leaf in enumerate(leaves) if leaf.dtype.is_floating]


def _sum_dtype(dtype):
    """The dtype gradients are summed in: float32 for halves."""
    return tf.float32 if dtype in _HALF else dtype


def _accumulators(leaves, floating):
    """Zero sums for the gradients of ``leaves[floating]``."""
    return [tf.zeros_like(leaves[i], _sum_dtype(leaves[i].dtype)) for i in floating]


def _project(cfg, params, inputs):
    return inputs if cfg.project is None else cfg.project(params, inputs)


def _forward(cfg, params, inputs, keep, states):
    """The forward pass: ``(outputs, last_output, states, traces, saved)``.

    ``inputs`` are projected, or, by windows (``cfg.segment``), the raw
    sequences; see ``_steps`` and ``_forward_windows``.
    """
    if cfg.segment:
        return _forward_windows(cfg, params, inputs, keep, states)
    outputs, (last_output, _), states, traces, saved = _steps(
        cfg, params, inputs, keep, states
    )
    return outputs, last_output, states, traces, saved


def _steps(cfg, params, inputs, keep, states, num_steps=None, start=None):
    """The forward loop (on projected inputs).

    Also returns what the backward pass needs (``cfg.save``): the state
    entering every step, batch-major, then, with ``cfg.keep_sums``, every
    step's input plus its additive deferred products and its other deferred
    products. ``num_steps`` (a window's) runs fewer steps than the inputs
    hold (the buffers keep their length, zeros past it); ``start`` is the
    ``(output, trace)`` a masked first step holds (zeros by default).
    """
    length = tf.shape(inputs)[1] if cfg.steps is None else cfg.steps
    num_steps = length if num_steps is None else num_steps
    batch = tf.shape(inputs)[0]
    dtype = inputs.dtype
    trace_sizes = dict(cfg.traces)
    states = list(states)

    def zeros(size, time=False):
        return tf.zeros([length, batch, size] if time else [batch, size], dtype)

    def read(t, buffers):
        i = _input_index(cfg, num_steps, t)
        return (inputs[:, i],) + (() if keep is None else (keep[:, i][:, None],))

    deferred = _deferred(cfg, params)
    leaves = tf.nest.flatten(params)
    # The engine computes every deferred product (kept or not), so that the
    # large ones run feature-major (``_matmul``).
    linears = _deferred(dataclasses.replace(cfg, keep_sums=True), params)
    transposed = {
        i: _barrier(tf.transpose(leaves[i]))
        for i, *_ in linears
        if _feature_major(leaves[i])
    }

    def body(t, current, carry):
        states, last_output, last_trace = carry
        x = current[0]
        kept_products = []
        if linears:
            # x_t + U h_{t-1} (+ U_c c_{t-1}), and any product the step does
            # not add to x_t (kept for the backward pass with keep_sums).
            products = {}
            for i, input_fn, name, additive in linears:
                operand = input_fn(params, states)
                if i in transposed:
                    product = _feature_major_matmul(transposed[i], operand)
                else:
                    product = tf.matmul(operand, leaves[i])
                if additive:
                    x = x + product
                    products[name] = tf.zeros_like(product)
                else:
                    products[name] = product
                    kept_products.append(product)
            output, new_states, trace = cfg.step_fn(params, x, states, products)
        else:
            output, new_states, trace = cfg.step_fn(params, x, states)
        new_states = list(new_states)
        trace = {k: trace[k] for k in trace_sizes}
        if keep is not None:
            kept = current[1]
            new_states = [tf.where(kept, n, o) for n, o in zip(new_states, states)]
            held = tf.zeros_like(output) if cfg.zero_output_for_mask else last_output
            output = tf.where(kept, output, held)
            trace = {k: tf.where(kept, trace[k], last_trace[k]) for k in trace}
        values = list(states) if cfg.save else []
        if cfg.keep_sums:
            values += [x] + kept_products
        if cfg.return_sequences:
            values.append(output)
        values += [trace[k] for k in trace_sizes]
        return (new_states, output, trace), values

    kept_widths = [
        leaves[i].shape[-1] for i, _, _, additive in deferred if not additive
    ]
    n_saved = 0
    if cfg.save:
        n_saved = len(states) + (1 + len(kept_widths) if cfg.keep_sums else 0)

    def index(t):
        i = _input_index(cfg, num_steps, t)
        return [i] * n_saved + [t] * (len(buffers) - n_saved)

    # Saved states batch-major (B, T, s), like the inputs: the backward pass
    # multiplies them with the input gradient as one matmul (deferred).
    saved_sizes = [tf.shape(s)[-1] for s in states]
    if cfg.keep_sums:
        saved_sizes += [tf.shape(inputs)[-1]] + kept_widths
    buffers = [
        tf.zeros([batch, length, size], dtype) for size in saved_sizes[:n_saved]
    ]
    if cfg.return_sequences:
        buffers.append(zeros(cfg.output_size, time=True))
    buffers += [zeros(n, time=True) for n in trace_sizes.values()]
    writers = [_write_batch_major] * n_saved + [_write] * (len(buffers) - n_saved)
    if start is None:
        start = (zeros(cfg.output_size), {k: zeros(n) for k, n in trace_sizes.items()})
    carry = (states,) + tuple(start)
    (states, last_output, last_trace), buffers = _loop(
        num_steps, read, body, carry, buffers, index, cfg.steps, writers
    )
    saved = buffers[:n_saved]
    buffers = [_time_major(b) for b in buffers[n_saved:]]
    outputs = buffers.pop(0) if cfg.return_sequences else None
    traces = dict(zip(trace_sizes, buffers))
    return outputs, (last_output, last_trace), list(states), traces, saved


def _deferred(cfg, params):
    """``[(leaf index, input_fn, name, additive)]`` of the deferred linears.

    ``step_fn.deferred`` (optional) lists ``(path, input_fn, additive)``: a
    kernel (``params`` at ``path``) whose product with
    ``input_fn(params, states)`` the engine may compute and hand to the step
    (``step_fn(..., products={name: ...})``). ``additive``: the step adds
    the product to its input ``x_t``, so the product's gradient is the
    gradient of ``x_t``. The kernel's gradient over all steps is then one
    large matmul after the loop, of the saved states' ``input_fn`` and the
    product's gradient, rather than one small matmul per step. Without
    ``keep_sums`` only additive ones are deferred (the others' gradients
    would need a stored per-step product gradient).
    """
    found = []
    for path, input_fn, additive in getattr(cfg.step_fn, "deferred", ()):
        if additive or cfg.keep_sums:
            index = tf.nest.flatten(_mark(params, path)).index(True)
            found.append((index, input_fn, path[-1], additive))
    return found


def _backward_matrices(cfg, params):
    """For each deferred linear (by leaf index), the matrix the backward
    pass multiplies a product's gradient with, made once before its loop:
    the kernel itself for a feature-major product, else its transpose, kept
    from being folded back into the product (``(B, G) x (G, in)`` runs
    faster than ``(B, G) x (in, G)^T``: 1.28 -> 0.96 ms for 100 steps of
    a 128 x 128 kernel at B=32)."""
    if not cfg.keep_sums:
        return {}
    leaves = tf.nest.flatten(params)
    return {
        i: leaves[i] if _feature_major(leaves[i]) else _barrier(tf.transpose(leaves[i]))
        for i, *_ in _deferred(cfg, params)
    }


def _linked_product(x, value, matrix):
    """``value`` (the kept ``x @ kernel``, or zeros when the step's input
    already holds it) with the gradient of ``x @ kernel`` for ``x`` (made
    with ``matrix``, from ``_backward_matrices``); the upstream gradient
    itself for ``value``."""
    if _feature_major(matrix):
        return _linked_feature_major(x, value, matrix)
    return _linked_batch_major(x, value, matrix)


@tf.custom_gradient
def _linked_batch_major(x, value, kernel_t):
    def grad(upstream):
        return tf.matmul(upstream, kernel_t), upstream, tf.zeros_like(kernel_t)

    return tf.identity(value), grad


@tf.custom_gradient
def _linked_feature_major(x, value, kernel):
    def grad(upstream):
        d_x = _feature_major_matmul(kernel, upstream)
        return d_x, upstream, tf.zeros_like(kernel)

    return tf.identity(value), grad


def _mark(structure, path, prefix=()):
    """``structure`` with True at ``path`` and False at every other leaf."""
    if isinstance(structure, dict):
        return {k: _mark(v, path, prefix + (k,)) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        return type(structure)(
            _mark(v, path, prefix + (i,)) for i, v in enumerate(structure)
        )
    return prefix == tuple(path)


def _summed(cfg, params):
    """Indices of the floating leaves whose gradient is summed per step."""
    deferred = {entry[0] for entry in _deferred(cfg, params)}
    return [i for i in _floating(tf.nest.flatten(params)) if i not in deferred]


def _vjp(cfg, params, x, states, kept_products, cotangents, matrices):
    """Recomputes one step and pulls ``cotangents`` back to its arguments.

    ``cotangents`` is ``(d_output, d_new_states, d_traces)`` (``d_traces``
    aligned with ``cfg.traces``); ``kept_products`` the forward's products
    of the non-additive deferred linears (with ``keep_sums``), ``matrices``
    their ``_backward_matrices``. Returns
    ``(d_x, d_states, d_params, d_kept_products)``; ``d_params`` is a list
    over ``_summed`` (the deferred kernels enter the step as constants:
    their gradients come after the loop).
    """
    leaves = tf.nest.flatten(params)
    floating = _summed(cfg, params)
    # Fresh identities: the tape must watch the tensors the step really uses
    # (inside a loop body, outer tensors are replaced by captures).
    leaves = [
        tf.identity(leaf) if i in floating else tf.stop_gradient(leaf)
        for i, leaf in enumerate(leaves)
    ]
    x = tf.identity(x)
    states = [tf.identity(s) for s in states]
    kept_products = [tf.identity(p) for p in kept_products]
    sources = [x, states, [leaves[i] for i in floating], kept_products]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(tf.nest.flatten(sources))
        params_in = tf.nest.pack_sequence_as(params, leaves)
        if cfg.keep_sums:
            # ``x`` already holds the additive products, the others were
            # kept: the step gets their values, whose gradients reach the
            # states through ``input_fn`` without recomputing a matmul.
            products, kept = {}, iter(kept_products)
            for i, input_fn, name, additive in _deferred(cfg, params):
                value = tf.zeros_like(x) if additive else next(kept)
                products[name] = _linked_product(
                    input_fn(params_in, states), value, matrices[i]
                )
            output, new_states, trace = cfg.step_fn(params_in, x, states, products)
        else:
            output, new_states, trace = cfg.step_fn(params_in, x, states)
    d_output, d_new_states, d_traces = cotangents
    return tape.gradient(
        [output] + list(new_states) + [trace[k] for k, _ in cfg.traces],
        sources,
        output_gradients=[d_output] + list(d_new_states) + list(d_traces),
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )


def _backward(cfg, params, inputs, keep, states, saved, grads):
    """The reverse-time pass: gradients of inputs, initial states and params.

    Step ``t``'s VJP gives the gradient of its input ``x_t``, of its
    entering states (carried to step ``t - 1``) and of the parameters
    (summed in float32 under mixed precision). The projected inputs are
    recomputed (one matmul) into a buffer whose step ``t`` the loop replaces
    by its gradient once read, so one ``(B, T, G)`` buffer serves both; the
    projection's own VJP then gives the input kernel's gradient and the
    inputs' as one large matmul each. By windows (``cfg.segment``), see
    ``_backward_windows``.
    """
    if cfg.segment:
        return _backward_windows(cfg, params, inputs, keep, states, saved, grads)
    g_outputs, g_last, g_states, g_traces = grads
    n_states = len(states)
    if cfg.keep_sums:
        projected = saved[n_states]  # the forward's x_t + products
    else:
        projected = _project(cfg, params, inputs)
    # The kept non-additive products, replaced by their gradients in place.
    kept_products = list(saved[n_states + 1 :])
    saved = saved[:n_states]
    leaves = tf.nest.flatten(params)
    carry = (
        list(g_states),
        g_last,
        _zero_traces(cfg, g_traces),
        _accumulators(leaves, _summed(cfg, params)),
    )
    (g_states, _, _, d_summed), d_projected, d_products = _reverse(
        cfg, params, projected, kept_products, saved, keep, g_outputs, g_traces, carry
    )
    d_inputs, d_sums = _gradients(
        cfg, params, inputs, saved, d_summed, d_projected, d_products
    )
    return d_inputs, list(g_states), _leaf_gradients(leaves, d_sums)


def _zero_traces(cfg, g_traces):
    return [tf.zeros_like(g_traces[k][:, 0]) for k, _ in cfg.traces]


def _leaf_gradients(leaves, d_sums):
    """``d_sums`` in each floating leaf's dtype; None for the others."""
    return [
        tf.cast(d_sums[i], leaf.dtype) if leaf.dtype.is_floating else None
        for i, leaf in enumerate(leaves)
    ]


def _reverse(
    cfg,
    params,
    projected,
    kept_products,
    saved,
    keep,
    g_outputs,
    g_traces,
    carry,
    num_steps=None,
):
    """The reverse-time loop over ``num_steps`` steps (all by default).

    ``carry`` is ``(d_states, d_output, d_traces, d_summed)``: the
    cotangents entering the last step and the per-step sums (over
    ``_summed``). Returns the carry after the first step, the input
    gradients (in ``projected``'s buffer) and the kept products' gradients
    (in theirs).
    """
    n_states = len(saved)
    if num_steps is None:
        num_steps = tf.shape(projected)[1] if cfg.steps is None else cfg.steps
    trace_keys = [k for k, _ in cfg.traces]
    matrices = _backward_matrices(cfg, params)

    def read(k, buffers):
        t = num_steps - 1 - k
        i = _input_index(cfg, num_steps, t)
        return dict(
            x=buffers[0][:, i],
            products=[b[:, i] for b in buffers[1:]],
            entering=[b[:, i] for b in saved],
            g_output=() if g_outputs is None else g_outputs[:, t],
            g_trace=[g_traces[n][:, t] for n in trace_keys],
            kept=() if keep is None else keep[:, i][:, None],
        )

    def body(k, current, carry):
        g_states, g_output, g_trace, accumulators = carry
        if g_outputs is not None:
            g_output = g_output + current["g_output"]
        g_trace = [a + b for a, b in zip(g_trace, current["g_trace"])]
        # Each result's cotangent splits into the part that enters the step
        # and, at a masked step, the part that passes it unchanged.
        incoming = [g_output] + list(g_states) + g_trace
        if keep is None:
            into, past = incoming, [tf.zeros_like(g) for g in incoming]
        else:
            kept = current["kept"]
            into = [tf.where(kept, g, tf.zeros_like(g)) for g in incoming]
            past = [tf.where(kept, tf.zeros_like(g), g) for g in incoming]
        if cfg.zero_output_for_mask:
            past[0] = tf.zeros_like(past[0])
        cotangents = (into[0], into[1 : 1 + n_states], into[1 + n_states :])
        d_x, d_entering, d_params, d_products = _vjp(
            cfg,
            params,
            current["x"],
            current["entering"],
            current["products"],
            cotangents,
            matrices,
        )
        d_entering = [d + p for d, p in zip(d_entering, past[1 : 1 + n_states])]
        accumulators = [a + tf.cast(d, a.dtype) for a, d in zip(accumulators, d_params)]
        carry = (d_entering, past[0], past[1 + n_states :], accumulators)
        return carry, [d_x] + list(d_products)

    def index(k):
        i = _input_index(cfg, num_steps, num_steps - 1 - k)
        return [i] * (1 + len(kept_products))

    carry, (d_projected, *d_products) = _loop(
        num_steps,
        read,
        body,
        carry,
        [projected] + list(kept_products),
        index,
        cfg.steps,
        writers=[_write_batch_major] * (1 + len(kept_products)),
        pipelined=False,
    )
    return carry, d_projected, d_products


def _gradients(cfg, params, inputs, saved, d_summed, d_projected, d_products):
    """``(d_inputs, d_sums)`` after the loop: the deferred kernels' and the
    projection's gradients as large matmuls; ``d_sums`` (one per leaf of
    ``params``, float32 for halves) holds ``d_summed`` at ``_summed``."""
    leaves = tf.nest.flatten(params)
    d_sums = [tf.zeros_like(leaf, _sum_dtype(leaf.dtype)) for leaf in leaves]
    for i, d in zip(_summed(cfg, params), d_summed):
        d_sums[i] = d
    d_products = iter(d_products)
    for i, input_fn, _, additive in _deferred(cfg, params):
        d_product = d_projected if additive else next(d_products)
        d_sums[i] = _sequence_matmul(input_fn(params, saved), d_product)
    d_inputs = d_projected if cfg.input_gradient else None
    if cfg.project is not None:
        d_inputs, d_projection = _projection_vjp(cfg, params, inputs, d_projected)
        for i, d in zip(_floating(leaves), d_projection):
            d_sums[i] = d_sums[i] + tf.cast(d, d_sums[i].dtype)
    return d_inputs, d_sums


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
        sequences, _start(begin, sequences.shape.rank, axis=1), tf.stack(shape)
    )


def _write_window(buffer, begin, value):
    """``buffer[:, begin:begin + value.shape[1]] = value``."""
    return gen_xla_ops.xla_dynamic_update_slice(
        buffer, value, _start(begin, buffer.shape.rank, axis=1)
    )


def _windows(cfg, inputs):
    """``(steps, window count, padded length)`` of ``inputs``' time axis."""
    num_steps = tf.shape(inputs)[1]
    count = (num_steps + cfg.segment - 1) // cfg.segment
    return num_steps, count, count * cfg.segment


def _forward_windows(cfg, params, inputs, keep, states):
    """The forward pass by windows of ``cfg.segment`` steps (raw inputs).

    Each window's inputs are projected (one matmul) and run by ``_steps``;
    what the backward pass needs (``cfg.save``) is the state entering each
    window, ``(B, windows, s)``.
    """
    num_steps, count, length = _windows(cfg, inputs)
    inputs = _processing_order(cfg, inputs, length)
    keep = _processing_order(cfg, keep, length)
    window_cfg = dataclasses.replace(
        cfg, go_backwards=False, save=False, keep_sums=False, segment=None
    )
    batch = tf.shape(inputs)[0]
    dtype = _project(cfg, params, inputs[:, :0]).dtype
    trace_sizes = dict(cfg.traces)
    sizes = ([cfg.output_size] if cfg.return_sequences else []) + list(
        trace_sizes.values()
    )
    buffers = [tf.zeros([batch, length, n], dtype) for n in sizes]
    checkpoints = []
    if cfg.save:
        checkpoints = [tf.zeros([batch, count, tf.shape(s)[-1]], s.dtype) for s in states]
    start = (
        tf.zeros([batch, cfg.output_size], dtype),
        {k: tf.zeros([batch, n], dtype) for k, n in trace_sizes.items()},
    )

    def body(j, states, start, buffers, checkpoints):
        begin = j * cfg.segment
        outputs, start, new_states, traces, _ = _steps(
            window_cfg,
            params,
            _project(cfg, params, _window(inputs, begin, cfg.segment)),
            _window(keep, begin, cfg.segment),
            states,
            num_steps=tf.minimum(cfg.segment, num_steps - begin),
            start=start,
        )
        values = ([outputs] if cfg.return_sequences else []) + [
            traces[k] for k in trace_sizes
        ]
        buffers = [_write_window(b, begin, v) for b, v in zip(buffers, values)]
        checkpoints = [
            _write_batch_major(c, j, s) for c, s in zip(checkpoints, states)
        ]
        return j + 1, new_states, start, buffers, checkpoints

    loop_vars = (tf.constant(0), list(states), start, buffers, checkpoints)
    _, states, (last_output, _), buffers, checkpoints = _while(
        lambda j, *_: j < count, body, loop_vars
    )
    buffers = [b[:, :num_steps] for b in buffers]
    outputs = buffers.pop(0) if cfg.return_sequences else None
    traces = dict(zip(trace_sizes, buffers))
    return outputs, last_output, list(states), traces, checkpoints


def _backward_windows(cfg, params, inputs, keep, states, saved, grads):
    """``_backward`` by windows of ``cfg.segment`` steps, last window first.

    ``saved`` holds the states entering each window. Each window runs its
    steps again from there, keeping their inputs plus products
    (``keep_sums``), and then runs the reverse loop, the deferred kernels'
    matmuls and the projection's VJP on the window alone. Memory: a few
    window-sized buffers instead of whole-sequence ones; cost: the window's
    forward matmuls once more, which the whole-sequence reverse loop
    recomputes anyway without kept sums.
    """
    g_outputs, g_last, g_states, g_traces = grads
    num_steps, count, length = _windows(cfg, inputs)
    size = cfg.segment
    inputs = _processing_order(cfg, inputs, length)
    keep = _processing_order(cfg, keep, length)
    # The output and trace cotangents are in processing order already.
    pad = dataclasses.replace(cfg, go_backwards=False)
    g_outputs = _processing_order(pad, g_outputs, length)
    g_traces = {k: _processing_order(pad, g, length) for k, g in g_traces.items()}
    window_cfg = dataclasses.replace(
        cfg, go_backwards=False, keep_sums=True, segment=None
    )
    forward_cfg = dataclasses.replace(
        window_cfg, save=True, return_sequences=False, traces=()
    )
    leaves = tf.nest.flatten(params)
    n_states = len(states)

    def body(j, carry, totals, d_inputs):
        begin = j * size
        steps = tf.minimum(size, num_steps - begin)
        x = _window(inputs, begin, size)
        kept = _window(keep, begin, size)
        entering = [c[:, j] for c in saved]
        *_, kept_sums = _steps(
            forward_cfg,
            params,
            _project(cfg, params, x),
            kept,
            entering,
            num_steps=steps,
        )
        window_states = kept_sums[:n_states]
        carry = carry[:3] + (_accumulators(leaves, _summed(window_cfg, params)),)
        carry, d_projected, d_products = _reverse(
            window_cfg,
            params,
            kept_sums[n_states],
            kept_sums[n_states + 1 :],
            window_states,
            kept,
            _window(g_outputs, begin, size),
            {k: _window(g, begin, size) for k, g in g_traces.items()},
            carry,
            num_steps=steps,
        )
        d_x, d_sums = _gradients(
            window_cfg, params, x, window_states, carry[3], d_projected, d_products
        )
        totals = [a + d for a, d in zip(totals, d_sums)]
        if cfg.input_gradient:
            d_inputs = _write_window(d_inputs, begin, d_x)
        return j - 1, carry, totals, d_inputs

    carry = (
        list(g_states),
        g_last,
        _zero_traces(cfg, g_traces),
        _accumulators(leaves, _summed(window_cfg, params)),
    )
    totals = [tf.zeros_like(leaf, _sum_dtype(leaf.dtype)) for leaf in leaves]
    d_inputs = tf.zeros_like(inputs) if cfg.input_gradient else tf.zeros([])
    loop_vars = (count - 1, carry, totals, d_inputs)
    _, carry, totals, d_inputs = _while(lambda j, *_: j >= 0, body, loop_vars)
    if not cfg.input_gradient:
        d_inputs = None
    else:
        d_inputs = d_inputs[:, :num_steps]
        if cfg.go_backwards:
            d_inputs = tf.reverse(d_inputs, [1])
    return d_inputs, list(carry[0]), _leaf_gradients(leaves, totals)


def _sequence_matmul(a, b):
    """``sum over (batch, time) of a^T b`` for ``(B, T, m)``, ``(B, T, n)``:
    one ``(m, B*T) x (B*T, n)`` matmul (float32 for halves)."""
    dtype = _sum_dtype(a.dtype)
    a = tf.cast(tf.reshape(a, [-1, tf.shape(a)[-1]]), dtype)
    b = tf.cast(tf.reshape(b, [-1, tf.shape(b)[-1]]), dtype)
    return tf.matmul(a, b, transpose_a=True)


def _projection_vjp(cfg, params, inputs, d_projected):
    """Gradients of ``cfg.project``'s inputs (None without
    ``cfg.input_gradient``) and floating params."""
    leaves = tf.nest.flatten(params)
    floating = _floating(leaves)
    leaves = [
        tf.identity(leaf) if i in floating else leaf for i, leaf in enumerate(leaves)
    ]
    inputs = tf.identity(inputs)
    sources = [inputs if cfg.input_gradient else [], [leaves[i] for i in floating]]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(tf.nest.flatten(sources))
        projected = cfg.project(tf.nest.pack_sequence_as(params, leaves), inputs)
    d_inputs, d_leaves = tape.gradient(
        projected,
        sources,
        output_gradients=d_projected,
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    return (d_inputs if cfg.input_gradient else None), d_leaves


@functools.lru_cache(maxsize=None)
def _compiled(cfg):
    """The compiled forward and backward functions of one configuration."""
    options = dict(jit_compile=True, reduce_retracing=True, autograph=False)
    forward = tf.function(functools.partial(_forward, cfg), **options)
    backward = tf.function(functools.partial(_backward, cfg), **options)
    return forward, backward


def _cores():
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def shard_count(batch=None):
    """How many batch shards the engine runs side by side (CPU only).

    XLA:CPU runs one loop on one core: a recurrence is a chain of small
    matmuls that it does not split across threads (measured: the same time
    pinned to one core). Independent loops over parts of the batch, each a
    separate compiled call, are run concurrently by TensorFlow's executor
    (measured on 2 cores, B=64, H=128: 1.4x simple, 1.4x GRU, 1.65x LSTM).
    One shard per core available to this replica, at least
    ``MIN_SHARD_ROWS`` rows each when the batch is known; one on a GPU.
    """
    if tf.config.list_logical_devices("GPU"):
        return 1
    cores = _cores()
    threads = tf.config.threading.get_inter_op_parallelism_threads()
    if threads:
        cores = min(cores, threads)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    shards = min(MAX_SHARDS, max(1, cores // replicas))
    if batch is not None:
        shards = min(shards, max(1, batch // MIN_SHARD_ROWS))
    return shards


def _split_batch(structure, sizes):
    """``structure``'s tensors split along axis 0 into ``len(sizes)`` parts."""
    shards = int(sizes.shape[0])
    parts = [
        [None] * shards if x is None else tf.split(x, sizes, axis=0)
        for x in tf.nest.flatten(structure)
    ]
    return [
        tf.nest.pack_sequence_as(structure, [p[i] for p in parts])
        for i in range(shards)
    ]


def run(
    step_fn,
    params,
    inputs,
    initial_states,
    *,
    output_size,
    mask=None,
    go_backwards=False,
    return_sequences=True,
    zero_output_for_mask=False,
    unroll=False,
    trace_sizes=None,
    per_example=None,
    project=None,
):
    """Runs ``step_fn`` over the time axis of ``inputs`` with XLA.

    Args:
        step_fn: ``step_fn(params, x_t, states) -> (y_t, new_states, trace_t)``,
            a pure function; ``trace_t`` is a dict of ``(B, k)`` tensors.
        params: a structure of tensors passed unchanged to every step.
        inputs: ``(B, T, G)`` per-step inputs, or, with ``project``, the
            sequences it projects to them.
        initial_states: list of ``(B, s)`` tensors.
        output_size: size of ``y_t``.
        mask: optional ``(B, T)`` boolean; a masked step keeps the previous
            states and output (zeros when ``zero_output_for_mask``).
        go_backwards: process time in reverse; outputs are returned in the
            order they were computed, as Keras does.
        return_sequences: keep every step's output, or only the last.
        unroll: unroll both compiled loops over a static time axis.
        trace_sizes: dict name -> size of the per-step trace to record.
        per_example: the keys of ``params`` (a dict) whose tensors have the
            batch on axis 0 (a recurrent dropout mask, say); ``()`` when none
            has. Given, the batch may be run as ``shard_count`` independent
            loops side by side; None (unknown) keeps one loop.
        project: optional pure ``project(params, inputs) -> (B, T, G)``,
            run on all steps at once before the loop (one large matmul).
            Inside the engine, it is recomputed for the backward pass rather
            than kept between the passes, and its VJP runs on the whole
            sequence.

    Returns:
        ``(outputs, last_output, final_states, traces)``: ``outputs`` is
        ``(B, T, output_size)`` or None, ``traces`` a dict of ``(B, T, k)``.
    """
    inputs = tf.convert_to_tensor(inputs)
    if unroll and inputs.shape[1] is None:
        raise ValueError(
            "unroll=True needs a static time dimension, got input shape "
            f"{tuple(inputs.shape)}"
        )
    initial_states = [tf.convert_to_tensor(s) for s in initial_states]
    keep = None if mask is None else tf.cast(mask, tf.bool)
    cfg = _Config(
        step_fn=step_fn,
        output_size=int(output_size),
        go_backwards=bool(go_backwards),
        return_sequences=bool(return_sequences),
        zero_output_for_mask=bool(zero_output_for_mask),
        traces=tuple((trace_sizes or {}).items()),
        steps=inputs.shape[1] if unroll else None,
        project=project,
    )
    shards = 1 if per_example is None else shard_count(inputs.shape[0])
    if shards == 1:
        return _run(cfg, params, inputs, keep, initial_states)
    batch = tf.shape(inputs)[0]
    sizes = tf.stack([(batch + shards - 1 - i) // shards for i in range(shards)])
    sharded = {k: params[k] for k in per_example}
    per_shard = _split_batch((inputs, keep, initial_states, sharded), sizes)
    results = [
        _run(cfg, {**params, **sharded_i}, inputs_i, keep_i, states_i)
        for inputs_i, keep_i, states_i, sharded_i in per_shard
    ]

    def concat(*parts):
        return None if parts[0] is None else tf.concat(parts, 0)

    return tf.nest.map_structure(concat, *results)


def _keeps_sums(cfg, inputs):
    """Whether the forward pass keeps its step inputs plus products (see
    ``KEEP_SUMS_MAX_STEPS``): only with deferred linears and a static time
    axis."""
    time = inputs.shape[1]
    if not getattr(cfg.step_fn, "deferred", ()) or time is None:
        return False
    return time <= KEEP_SUMS_MAX_STEPS


def _segment(cfg, inputs):
    """The window length of a loop run by windows (about
    ``SEGMENT_STEPS``), or None: time axes longer than
    ``KEEP_SUMS_MAX_STEPS`` or dynamic, with deferred linears, not
    unrolled."""
    time = inputs.shape[1]
    if not getattr(cfg.step_fn, "deferred", ()) or cfg.steps is not None:
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


def _forward_inputs(cfg, params, inputs):
    """What the compiled forward pass takes: the projected inputs, or the
    raw ones when it projects them window by window."""
    return inputs if cfg.segment else _project(cfg, params, inputs)


def _recording(tensors):
    """Whether a gradient tape records operations on ``tensors``.

    False for inference (``predict``): the forward loop then does not write
    the states its backward pass would need. A gradient asked for anyway
    (e.g. of a ``tf.function`` traced without a tape) recomputes them.
    """
    try:
        return bool(record.should_record_backprop(tensors))
    except Exception:  # noqa: BLE001 - an internal API; when in doubt, save
        return True


def _run(cfg, params, inputs, keep, initial_states):
    """One fused loop over the whole (shard of the) batch."""
    leaves = [tf.convert_to_tensor(leaf) for leaf in tf.nest.flatten(params)]
    floating = _floating(leaves)
    trace_keys = [k for k, _ in cfg.traces]
    n_states = len(initial_states)
    masked = keep is not None
    args = [inputs] + ([keep] if masked else []) + list(initial_states)
    args += [leaves[i] for i in floating]
    save = _recording([a for a in args if a.dtype.is_floating])
    # Unknown (nothing recorded: a gradient may still be asked) counts as
    # wanted.
    cfg = dataclasses.replace(cfg, input_gradient=not save or _recording([inputs]))

    def unpack(args):
        args = list(args)
        inputs = args.pop(0)
        keep = args.pop(0) if masked else None
        states = args[:n_states]
        values = list(leaves)
        for i, leaf in zip(floating, args[n_states:]):
            values[i] = leaf
        return inputs, keep, states, tf.nest.pack_sequence_as(params, values)

    @tf.custom_gradient
    def fused(*args):
        # stop_gradient: ``grad`` below is the only gradient of the loop; a
        # tape must not try to differentiate the compiled call itself.
        inputs, keep, states, params_in = unpack(
            [a if a.dtype == tf.bool else tf.stop_gradient(a) for a in args]
        )
        # The forward projection runs outside XLA, as a TensorFlow matmul on
        # every core (measured faster than XLA:CPU's); the backward pass
        # recomputes it rather than keep it.
        keep_sums = save and _keeps_sums(cfg, inputs)
        run_cfg = dataclasses.replace(
            cfg, save=save, keep_sums=keep_sums, segment=_segment(cfg, inputs)
        )
        forward, backward = _compiled(run_cfg)
        outputs, last_output, final_states, traces, saved = forward(
            params_in, _forward_inputs(run_cfg, params_in, inputs), keep, states
        )
        results = [outputs] if cfg.return_sequences else []
        results += [last_output] + final_states + [traces[k] for k in trace_keys]

        def grad(*upstream, variables=None):
            upstream = [
                tf.zeros_like(r) if g is None else g for r, g in zip(results, upstream)
            ]
            g_outputs = upstream.pop(0) if cfg.return_sequences else None
            g_last = upstream.pop(0)
            g_states = upstream[:n_states]
            g_traces = dict(zip(trace_keys, upstream[n_states:]))
            entering = saved
            if not save:
                saving_cfg = dataclasses.replace(run_cfg, save=True)
                saving, _ = _compiled(saving_cfg)
                entering = saving(
                    params_in,
                    _forward_inputs(saving_cfg, params_in, inputs),
                    keep,
                    states,
                )[-1]
            d_inputs, d_states, d_leaves = backward(
                params_in,
                inputs,
                keep,
                states,
                entering,
                (g_outputs, g_last, g_states, g_traces),
            )
            d_args = [d_inputs] + ([None] if masked else [])
            d_args += d_states + [d_leaves[i] for i in floating]
            if variables:
                # The loop reads no variable; any found upstream of the mask
                # gets no gradient through it.
                return d_args, [None] * len(variables)
            return d_args

        return results, grad

    results = list(fused(*args))
    outputs = results.pop(0) if cfg.return_sequences else None
    last_output = results.pop(0)
    final_states = results[:n_states]
    traces = dict(zip(trace_keys, results[n_states:]))
    return outputs, last_output, final_states, traces
