"""The fused engine's backward pass: a reverse-time loop of step VJPs.

A ``tf.custom_gradient`` (in ``_xla``) replaces autodiff through the forward
loop (which would build TensorList accumulators XLA cannot size). Its
backward pass is one compiled function: it recomputes the projection
(rather than keep it between the passes) into a ``(B, T, G)`` buffer, runs
time in reverse and, at every step, recomputes the step from the saved
entering state under a ``tf.GradientTape`` and takes its vector-Jacobian
product. The gradient of the step's input replaces that input in the same
buffer; the gradient of its entering states goes to the previous step;
parameter gradients are summed (float32 under mixed precision). Kernels
whose product the step adds to its input (``Recurrence.deferred``: the
recurrent kernel of the simple and LSTM cores, ``U_c``) get their gradient
after the loop, as one ``(in, B*T) x (B*T, G)`` matmul of the saved states
and the input gradient, as do the projection's weights and inputs (its
VJP). It is generic over the step: no cell has a hand-written backward pass.
"""

import contextlib
from typing import NamedTuple

import tensorflow as tf

from keras_feedback.engine import _masking as masking
from keras_feedback.engine import _xla_config as config
from keras_feedback.engine import _xla_layouts as layouts
from keras_feedback.engine import _xla_loops as loops
from keras_feedback.engine._xla_config import Gradients


class StepInputs(NamedTuple):
    """Per-step inputs of the step, ``(B, T, ...)``, which the reverse loop
    replaces by their gradients in place."""

    x: tf.Tensor  # the step's input (plus its additive deferred products)
    products: list  # the kept non-additive deferred products


class Cotangents(NamedTuple):
    """The reverse loop's carry."""

    states: list  # of the new states of the step to run next
    output: tf.Tensor  # of its output, held from it by later masked steps
    traces: dict  # of its trace, likewise
    summed: list  # sums of the parameter gradients, over ``config.summed``


class _StepCotangents(NamedTuple):
    """The cotangents of one step's results."""

    output: tf.Tensor
    states: list
    traces: dict


class _StepGradients(NamedTuple):
    """A step's VJP."""

    x: tf.Tensor
    states: list  # of its entering states
    params: list  # over ``config.summed``
    products: list  # of the kept products it took


class _Current(NamedTuple):
    """What the reverse loop reads for one step."""

    x: tf.Tensor
    products: list
    entering: list
    g_output: tf.Tensor  # () without return_sequences
    g_trace: dict
    kept: tf.Tensor  # () unmasked


def zero_traces(cfg, g_traces):
    """Zero cotangents of one step's traces, from their sequences'."""
    return {
        k: tf.zeros([tf.shape(g)[0], tf.shape(g)[-1]], g.dtype)
        for k, g in g_traces.items()
    }


def backward(cfg, params, inputs, keep, states, saved, upstream):
    """The reverse-time pass over the whole sequence: a ``Gradients``.

    Step ``t``'s VJP gives the gradient of its input ``x_t``, of its
    entering states (carried to step ``t - 1``) and of the parameters
    (summed in float32 under mixed precision). The projected inputs are
    recomputed (one matmul) into a buffer whose step ``t`` the loop replaces
    by its gradient once read, so one ``(B, T, G)`` buffer serves both; the
    projection's own VJP then gives the input kernel's gradient and the
    inputs' as one large matmul each. ``upstream`` holds the results'
    cotangents (``Results``).
    """
    if cfg.keep_sums:
        projected = saved.sums  # the forward's x_t + products
    else:
        projected = config.project(cfg, params, inputs)
    leaves = tf.nest.flatten(params)
    carry = Cotangents(
        states=list(upstream.states),
        output=upstream.last_output,
        traces=zero_traces(cfg, upstream.traces),
        summed=config.accumulators(leaves, config.summed(cfg, params)),
    )
    # The kept non-additive products are replaced by their gradients too.
    carry, d_step = reverse(
        cfg,
        params,
        StepInputs(projected, list(saved.products)),
        saved.entering,
        keep,
        upstream.outputs,
        upstream.traces,
        carry,
    )
    d_inputs, d_sums = gradients(
        cfg, params, inputs, saved.entering, carry.summed, d_step
    )
    return Gradients(
        d_inputs, list(carry.states), config.leaf_gradients(leaves, d_sums)
    )


def reverse(
    cfg, params, inputs, entering, keep, g_outputs, g_traces, carry, num_steps=None
):
    """The reverse-time loop over ``num_steps`` steps (all by default).

    ``inputs`` (``StepInputs``) are the steps' inputs, ``entering`` their
    entering states, ``carry`` (``Cotangents``) the cotangents entering the
    last step and zero sums. Returns the carry after the first step and the
    ``StepInputs``' gradients (in their buffers).
    """
    # A dynamic or empty time axis runs on sequences of at least one step.
    empty = num_steps is None and cfg.steps is None and loops.may_be_empty(inputs.x)
    if empty:
        num_steps = tf.shape(inputs.x)[1]
        pad = loops.at_least_one_step
        inputs = StepInputs(pad(inputs.x), [pad(p) for p in inputs.products])
        entering = [pad(s) for s in entering]
        keep, g_outputs = pad(keep), pad(g_outputs)
        g_traces = {k: pad(g) for k, g in g_traces.items()}
    if num_steps is None:
        num_steps = tf.shape(inputs.x)[1] if cfg.steps is None else cfg.steps
    matrices = layouts.backward_matrices(cfg, params)

    def read(k, buffers):
        t = num_steps - 1 - k
        i = config.input_index(cfg, num_steps, t)
        return _Current(
            x=buffers.x[:, i],
            products=[b[:, i] for b in buffers.products],
            entering=[b[:, i] for b in entering],
            g_output=() if g_outputs is None else g_outputs[:, t],
            g_trace={n: g[:, t] for n, g in g_traces.items()},
            kept=() if keep is None else keep[:, i][:, None],
        )

    def body(k, current, carry):
        g_output = carry.output
        if g_outputs is not None:
            g_output = g_output + current.g_output
        g_trace = {n: g + current.g_trace[n] for n, g in carry.traces.items()}
        # Each result's cotangent splits into the part that enters the step
        # and, at a masked step, the part that passes it unchanged.
        incoming = _StepCotangents(g_output, list(carry.states), g_trace)
        if keep is None:
            into = incoming
            past = tf.nest.map_structure(tf.zeros_like, incoming)
        else:
            into, past = masking.split(current.kept, incoming)
        if cfg.zero_output_for_mask:
            past = past._replace(output=tf.zeros_like(past.output))
        d = vjp(
            cfg, params, current.x, current.entering, current.products, into, matrices
        )
        summed = [a + tf.cast(g, a.dtype) for a, g in zip(carry.summed, d.params)]
        carry = Cotangents(
            states=[g + p for g, p in zip(d.states, past.states)],
            output=past.output,
            traces=past.traces,
            summed=summed,
        )
        return carry, StepInputs(d.x, list(d.products))

    def index(k):
        i = config.input_index(cfg, num_steps, num_steps - 1 - k)
        return StepInputs(i, [i] * len(inputs.products))

    writers = StepInputs(
        loops.write_batch_major, [loops.write_batch_major] * len(inputs.products)
    )
    carry, d_inputs = loops.loop(
        num_steps,
        read,
        body,
        carry,
        inputs,
        index,
        cfg.steps,
        writers=writers,
    )
    if empty:
        d_inputs = tf.nest.map_structure(lambda d: d[:, :num_steps], d_inputs)
    return carry, d_inputs


def vjp(cfg, params, x, states, kept_products, cotangents, matrices):
    """Recomputes one step and pulls ``cotangents`` back to its arguments.

    ``cotangents`` (``_StepCotangents``) are those of the step's output, new
    states and traces; ``kept_products`` the forward's products of the
    non-additive deferred linears (with ``keep_sums``), ``matrices`` their
    ``backward_matrices``. Returns a ``_StepGradients``; its ``params`` is a
    list over ``config.summed`` (the deferred kernels enter the step as
    constants: their gradients come after the loop).
    """
    leaves = tf.nest.flatten(params)
    floating = config.summed(cfg, params)
    # Fresh identities: the tape must watch the tensors the step really uses
    # (inside a loop body, outer tensors are replaced by captures).
    leaves = [
        tf.identity(leaf) if i in floating else tf.stop_gradient(leaf)
        for i, leaf in enumerate(leaves)
    ]
    x = tf.identity(x)
    states = [tf.identity(s) for s in states]
    kept_products = [tf.identity(p) for p in kept_products]
    sources = _StepGradients(x, states, [leaves[i] for i in floating], kept_products)
    symbolic = cfg.recurrence.symbolic_gradients
    tape = tf.GradientTape(watch_accessed_variables=False)
    with contextlib.nullcontext() if symbolic else tape:
        if not symbolic:
            tape.watch(tf.nest.flatten(sources))
        params_in = tf.nest.pack_sequence_as(params, leaves)
        if cfg.keep_sums:
            # ``x`` already holds the additive products, the others were
            # kept: the step gets their values, whose gradients reach the
            # states through ``input_fn`` without recomputing a matmul.
            products, kept = {}, iter(kept_products)
            for linear in config.deferred(cfg, params):
                value = tf.zeros_like(x) if linear.additive else next(kept)
                products[linear.name] = layouts.linked_product(
                    linear.input_fn(params_in, states), value, matrices[linear.index]
                )
            output, new_states, trace = cfg.step(params_in, x, states, products)
        else:
            output, new_states, trace = cfg.step(params_in, x, states)
    names = [k for k, _ in cfg.traces]
    targets = [output] + list(new_states) + [trace[k] for k in names]
    upstream = (
        [cotangents.output]
        + list(cotangents.states)
        + [cotangents.traces[k] for k in names]
    )
    if symbolic:
        flat = tf.gradients(
            targets,
            tf.nest.flatten(sources),
            grad_ys=upstream,
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        return tf.nest.pack_sequence_as(sources, flat)
    return tape.gradient(
        targets,
        sources,
        output_gradients=upstream,
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )


def gradients(cfg, params, inputs, entering, d_summed, d_step):
    """``(d_inputs, d_sums)`` after the loop: the deferred kernels' and the
    projection's gradients as large matmuls; ``d_sums`` (one per leaf of
    ``params``, float32 for halves) holds ``d_summed`` at
    ``config.summed``. ``d_step``: the ``StepInputs``' gradients."""
    leaves = tf.nest.flatten(params)
    d_sums = [tf.zeros_like(leaf, config.sum_dtype(leaf.dtype)) for leaf in leaves]
    for i, d in zip(config.summed(cfg, params), d_summed):
        d_sums[i] = d
    d_products = iter(d_step.products)
    for linear in config.deferred(cfg, params):
        d_product = d_step.x if linear.additive else next(d_products)
        d_sums[linear.index] = sequence_matmul(
            linear.input_fn(params, entering), d_product
        )
    d_inputs = d_step.x if cfg.input_gradient else None
    if cfg.project is not None:
        d_inputs, d_projection = projection_vjp(cfg, params, inputs, d_step.x)
        for i, d in zip(config.floating(leaves), d_projection):
            d_sums[i] = d_sums[i] + tf.cast(d, d_sums[i].dtype)
    return d_inputs, d_sums


def sequence_matmul(a, b):
    """``sum over (batch, time) of a^T b`` for ``(B, T, m)``, ``(B, T, n)``:
    one ``(m, B*T) x (B*T, n)`` matmul (float32 for halves)."""
    dtype = config.sum_dtype(a.dtype)
    a = tf.cast(tf.reshape(a, [-1, tf.shape(a)[-1]]), dtype)
    b = tf.cast(tf.reshape(b, [-1, tf.shape(b)[-1]]), dtype)
    return tf.matmul(a, b, transpose_a=True)


def projection_vjp(cfg, params, inputs, d_projected):
    """Gradients of ``cfg.project``'s inputs (None without
    ``cfg.input_gradient``) and floating params."""
    leaves = tf.nest.flatten(params)
    floating = config.floating(leaves)
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
