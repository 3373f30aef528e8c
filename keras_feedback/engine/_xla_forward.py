"""The fused engine's forward loop, on projected inputs.

One loop (compiled with XLA by ``_xla``) writes the outputs and the state
*entering* every step into preallocated tensors (in-place
dynamic-update-slices); with no gradient tape recording (inference) it
writes no states. The engine computes the deferred linears' products itself
(``U h_{t-1}``, ``U_c c_{t-1}``), so that the large ones run feature-major
(``_xla_layouts``) and their kernels' gradients can be batched over all
steps after the backward loop.
"""

import dataclasses
from typing import NamedTuple

import tensorflow as tf

from keras_feedback.engine import _masking as masking
from keras_feedback.engine import _xla_config as config
from keras_feedback.engine import _xla_layouts as layouts
from keras_feedback.engine import _xla_loops as loops
from keras_feedback.engine._xla_config import Results
from keras_feedback.engine._xla_config import Saved


class Held(NamedTuple):
    """What a masked step holds: the last output and trace."""

    output: tf.Tensor
    trace: dict


class Steps(NamedTuple):
    """What ``steps`` returns."""

    results: Results
    saved: Saved
    held: Held  # after the last step


class _Carry(NamedTuple):
    states: list
    held: Held


class _Written(NamedTuple):
    """What the forward loop writes at every step, each a list of tensors."""

    entering: list  # ``Saved.entering``, with ``save``
    sums: list  # ``[Saved.sums]``, with ``keep_sums``
    products: list  # ``Saved.products``
    outputs: list  # ``[output]``, with ``return_sequences``
    traces: list  # aligned with ``cfg.traces``


def _by_layout(written, batch_major, time_major):
    """``written`` with ``batch_major`` at what is saved for the backward
    pass (``(B, T, ...)``, at the input index) and ``time_major`` at the
    results (``(T, B, ...)``, at the step)."""
    return _Written(
        entering=[batch_major] * len(written.entering),
        sums=[batch_major] * len(written.sums),
        products=[batch_major] * len(written.products),
        outputs=[time_major] * len(written.outputs),
        traces=[time_major] * len(written.traces),
    )


def steps(cfg, params, inputs, keep, states, num_steps=None, start=None):
    """The forward loop (on projected inputs): a ``Steps``.

    Also returns what the backward pass needs (``cfg.save``): the state
    entering every step, batch-major, then, with ``cfg.keep_sums``, every
    step's input plus its additive deferred products and its other deferred
    products. ``num_steps`` (a window's) runs fewer steps than the inputs
    hold (the buffers keep their length, zeros past it); ``start`` is the
    ``Held`` of a masked first step (zeros by default).
    """
    # A dynamic or empty time axis runs on inputs of at least one step.
    empty = num_steps is None and cfg.steps is None and loops.may_be_empty(inputs)
    if empty:
        num_steps = tf.shape(inputs)[1]
        inputs = loops.at_least_one_step(inputs)
        keep = loops.at_least_one_step(keep)
    length = tf.shape(inputs)[1] if cfg.steps is None else cfg.steps
    num_steps = length if num_steps is None else num_steps
    batch = tf.shape(inputs)[0]
    dtype = inputs.dtype
    trace_sizes = dict(cfg.traces)
    states = list(states)
    keeping = cfg.save and cfg.keep_sums

    def zeros(size, time=False):
        return tf.zeros([length, batch, size] if time else [batch, size], dtype)

    def read(t, buffers):
        i = config.input_index(cfg, num_steps, t)
        return inputs[:, i], (() if keep is None else keep[:, i][:, None])

    leaves = tf.nest.flatten(params)
    # The engine computes every deferred product (kept or not), so that the
    # large ones run feature-major.
    linears = config.deferred(dataclasses.replace(cfg, keep_sums=True), params)
    transposed = layouts.forward_matrices(linears, leaves)

    def body(t, current, carry):
        x, kept = current
        kept_products = []
        if linears:
            # x_t + U h_{t-1} (+ U_c c_{t-1}), and any product the step does
            # not add to x_t (kept for the backward pass with keep_sums).
            products = {}
            for linear in linears:
                operand = linear.input_fn(params, carry.states)
                product = layouts.product(linear, operand, leaves, transposed)
                if linear.additive:
                    x = x + product
                    products[linear.name] = tf.zeros_like(product)
                else:
                    products[linear.name] = product
                    kept_products.append(product)
            output, new_states, trace = cfg.step(params, x, carry.states, products)
        else:
            output, new_states, trace = cfg.step(params, x, carry.states)
        new_states = list(new_states)
        trace = {k: trace[k] for k in trace_sizes}
        if keep is not None:
            last = carry.held
            new_states = masking.keep(kept, new_states, list(carry.states))
            output = masking.output(kept, output, last.output, cfg.zero_output_for_mask)
            trace = masking.keep(kept, trace, last.trace)
        values = _Written(
            entering=list(carry.states) if cfg.save else [],
            sums=[x] if keeping else [],
            products=kept_products if keeping else [],
            outputs=[output] if cfg.return_sequences else [],
            traces=[trace[k] for k in trace_sizes],
        )
        return _Carry(new_states, Held(output, trace)), values

    # Saved states batch-major (B, T, s), like the inputs: the backward pass
    # multiplies them with the input gradient as one matmul (deferred).
    def saved_zeros(size):
        return tf.zeros([batch, length, size], dtype)

    kept_widths = [
        leaves[linear.index].shape[-1]
        for linear in config.deferred(cfg, params)
        if not linear.additive
    ]
    buffers = _Written(
        entering=[saved_zeros(tf.shape(s)[-1]) for s in states] if cfg.save else [],
        sums=[saved_zeros(tf.shape(inputs)[-1])] if keeping else [],
        products=[saved_zeros(w) for w in kept_widths] if keeping else [],
        outputs=[zeros(cfg.output_size, time=True)] if cfg.return_sequences else [],
        traces=[zeros(n, time=True) for n in trace_sizes.values()],
    )
    writers = _by_layout(buffers, loops.write_batch_major, loops.write)

    def index(t):
        return _by_layout(buffers, config.input_index(cfg, num_steps, t), t)

    if start is None:
        start = Held(
            zeros(cfg.output_size), {k: zeros(n) for k, n in trace_sizes.items()}
        )
    carry, buffers = loops.loop(
        num_steps, read, body, _Carry(states, start), buffers, index, cfg.steps, writers
    )
    if empty:
        cuts = _by_layout(buffers, lambda b: b[:, :num_steps], lambda b: b[:num_steps])
        buffers = tf.nest.map_structure(lambda cut, b: cut(b), cuts, buffers)
    saved = Saved(
        entering=buffers.entering,
        sums=buffers.sums[0] if buffers.sums else None,
        products=buffers.products,
    )
    results = Results(
        outputs=loops.time_major(buffers.outputs[0]) if buffers.outputs else None,
        last_output=carry.held.output,
        states=list(carry.states),
        traces={k: loops.time_major(b) for k, b in zip(trace_sizes, buffers.traces)},
    )
    return Steps(results, saved, carry.held)
