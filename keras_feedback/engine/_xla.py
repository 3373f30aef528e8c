"""The fused recurrence: XLA-compiled forward loop, XLA-compiled backward loop.

Same contract as ``keras_feedback.engine._reference.run``; it differs in how
the loop runs and how it is differentiated:

- ``project`` (the input projection of all steps, one large matmul) runs
  before the forward loop; the loop (``_xla_forward``) is one
  ``tf.function(jit_compile=True)`` that writes the outputs and the state
  *entering* every step into preallocated tensors (``_xla_loops``); nothing
  is a TensorArray/TensorList. With no gradient tape recording (inference)
  it writes no states.
- a ``tf.custom_gradient`` (here) replaces autodiff through the loop (which
  would build TensorList accumulators XLA cannot size). Its backward pass
  (``_xla_reverse``) is one compiled function: a reverse-time loop of the
  step's vector-Jacobian products, recomputed from the saved entering
  states, with the deferred kernels' and the projection's gradients as
  large matmuls after the loop. It is generic over the step: no cell has a
  hand-written backward pass. Large per-step products run feature-major
  (``_xla_layouts``).
- short static time axes keep each step's input plus products instead;
  long or dynamic ones run both passes by windows, keeping only the states
  entering each window (``_xla_windows``).
- on CPU the batch is split into ``shard_count`` parts, each its own pair of
  compiled calls, which TensorFlow's executor runs side by side on the
  cores: XLA:CPU runs one loop on one core (``_xla_shards``).

Masked steps, ``go_backwards``, traces, initial states and every parameter
(a recurrent dropout mask included) get their gradients. An empty batch
gives empty results; a time axis of no step gives no outputs, zero last
outputs and the initial states (whose gradients pass through). XLA compiles
each loop once per distinct input shape (batch, time); ``pad_time`` and
``docs/engine.md`` say how to bound recompilations.

The tunable constants live in the module that reads them (patch them
there); this module re-exports them to be read.
"""

import dataclasses
import functools
from typing import NamedTuple
from typing import Optional

import tensorflow as tf
from tensorflow.python.eager import record

from keras_feedback.engine import _xla_config as config
from keras_feedback.engine import _xla_forward as forward_loop
from keras_feedback.engine import _xla_reverse as reverse_loop
from keras_feedback.engine import _xla_shards as shards
from keras_feedback.engine import _xla_windows as windows
from keras_feedback.engine._xla_config import Forward
from keras_feedback.engine._xla_config import Results
from keras_feedback.engine._xla_layouts import FEATURE_MAJOR_MIN_WEIGHTS
from keras_feedback.engine._xla_shards import MAX_SHARDS
from keras_feedback.engine._xla_shards import MIN_SHARD_ROWS
from keras_feedback.engine._xla_shards import shard_count
from keras_feedback.engine._xla_windows import KEEP_SUMS_MAX_STEPS
from keras_feedback.engine._xla_windows import SEGMENT_STEPS

__all__ = [
    "FEATURE_MAJOR_MIN_WEIGHTS",
    "KEEP_SUMS_MAX_STEPS",
    "MAX_SHARDS",
    "MIN_SHARD_ROWS",
    "SEGMENT_STEPS",
    "run",
    "shard_count",
]


def _forward(cfg, params, inputs, keep, states):
    """The forward pass: a ``Forward``.

    ``inputs`` are projected, or, by windows (``cfg.segment``), the raw
    sequences; see ``_xla_forward`` and ``_xla_windows``.
    """
    if cfg.segment:
        return windows.forward_windows(cfg, params, inputs, keep, states)
    ran = forward_loop.steps(cfg, params, inputs, keep, states)
    return Forward(ran.results, ran.saved)


def _backward(cfg, params, inputs, keep, states, saved, upstream):
    """The backward pass: a ``Gradients`` (see ``_xla_reverse``)."""
    if cfg.segment:
        return windows.backward_windows(
            cfg, params, inputs, keep, states, saved, upstream
        )
    return reverse_loop.backward(cfg, params, inputs, keep, states, saved, upstream)


@functools.cache
def _compiled(cfg):
    """The compiled forward and backward functions of one configuration."""
    options = dict(jit_compile=True, reduce_retracing=True, autograph=False)
    forward = tf.function(functools.partial(_forward, cfg), **options)
    backward = tf.function(functools.partial(_backward, cfg), **options)
    return forward, backward


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
    """Runs ``recurrence`` over the time axis of ``inputs`` with XLA.

    Args:
        recurrence: the cell's ``Recurrence`` (``_contract``).
        params: a structure of tensors passed unchanged to every step.
        inputs: ``(B, T, ...)`` sequences, which ``recurrence.project``
            projects to the per-step inputs all at once (or, without
            ``project``, the per-step inputs ``(B, T, G)``). Inside the
            engine the projection is recomputed for the backward pass rather
            than kept between the passes, and its VJP runs on the whole
            sequence.
        initial_states: list of ``(B, s)`` tensors.
        mask: optional ``(B, T)`` boolean; a masked step keeps the previous
            states and output (zeros when ``zero_output_for_mask``).
        go_backwards: process time in reverse; outputs are returned in the
            order they were computed, as Keras does.
        return_sequences: keep every step's output, or only the last.
        unroll: unroll both compiled loops over a static time axis.
        return_trace: record ``recurrence.trace_sizes`` at every step.
        per_example: the keys of ``params`` (a dict) whose tensors have the
            batch on axis 0 (a recurrent dropout mask, say); ``()`` when none
            has. Given, the batch may be run as ``shard_count`` independent
            loops side by side; None (unknown) keeps one loop.

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
    cfg = config.Config(
        recurrence=recurrence,
        go_backwards=bool(go_backwards),
        return_sequences=bool(return_sequences),
        zero_output_for_mask=bool(zero_output_for_mask),
        traces=tuple(recurrence.traces(return_trace).items()),
        steps=inputs.shape[1] if unroll else None,
    )
    results = shards.run_sharded(
        functools.partial(_run, cfg), params, per_example, inputs, keep, initial_states
    )
    return tuple(results)


def _forward_inputs(cfg, params, inputs):
    """What the compiled forward pass takes: the projected inputs, or the
    raw ones when it projects them window by window."""
    return inputs if cfg.segment else config.project(cfg, params, inputs)


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


class _Args(NamedTuple):
    """What the loop's custom gradient differentiates."""

    inputs: tf.Tensor
    keep: Optional[tf.Tensor]  # gets no gradient
    states: list
    leaves: list  # the floating leaves of params


def _tensors(structure, like=None):
    """The leaves of ``structure`` where ``like`` (a structure alike,
    ``structure`` itself by default) has no None."""
    like = structure if like is None else like
    pairs = zip(tf.nest.flatten(structure), tf.nest.flatten(like))
    return [x for x, y in pairs if y is not None]


def _pack(structure, tensors):
    """``structure`` with ``tensors`` at its leaves that are not None."""
    tensors = iter(tensors)
    leaves = [None if x is None else next(tensors) for x in tf.nest.flatten(structure)]
    return tf.nest.pack_sequence_as(structure, leaves)


def _run(cfg, params, inputs, keep, initial_states):
    """One fused loop over the whole (shard of the) batch: a ``Results``."""
    leaves = [tf.convert_to_tensor(leaf) for leaf in tf.nest.flatten(params)]
    floating = config.floating(leaves)
    args = _Args(inputs, keep, list(initial_states), [leaves[i] for i in floating])
    save = _recording([a for a in _tensors(args) if a.dtype.is_floating])
    # Unknown (nothing recorded: a gradient may still be asked) counts as
    # wanted.
    cfg = dataclasses.replace(cfg, input_gradient=not save or _recording([inputs]))

    def unpack(tensors):
        """The ``_Args`` of the custom gradient's arguments, and params."""
        given = _pack(args, tensors)
        values = list(leaves)
        for i, leaf in zip(floating, given.leaves):
            values[i] = leaf
        return given, tf.nest.pack_sequence_as(params, values)

    @tf.custom_gradient
    def fused(*tensors):
        # stop_gradient: ``grad`` below is the only gradient of the loop; a
        # tape must not try to differentiate the compiled call itself.
        given, params_in = unpack(
            [a if a.dtype == tf.bool else tf.stop_gradient(a) for a in tensors]
        )
        # The forward projection runs outside XLA, as a TensorFlow matmul on
        # every core (faster than XLA:CPU's: docs/engine.md, M3); the backward pass
        # recomputes it rather than keep it.
        keep_sums = save and windows.keeps_sums(cfg, given.inputs)
        run_cfg = dataclasses.replace(
            cfg,
            save=save,
            keep_sums=keep_sums,
            segment=windows.segment(cfg, given.inputs),
        )
        forward, backward = _compiled(run_cfg)
        results, saved = forward(
            params_in,
            _forward_inputs(run_cfg, params_in, given.inputs),
            given.keep,
            given.states,
        )

        def grad(*upstream, variables=None):
            upstream = [
                tf.zeros_like(r) if g is None else g
                for r, g in zip(_tensors(results), upstream)
            ]
            entering = saved
            if not save:
                saving_cfg = dataclasses.replace(run_cfg, save=True)
                saving, _ = _compiled(saving_cfg)
                entering = saving(
                    params_in,
                    _forward_inputs(saving_cfg, params_in, given.inputs),
                    given.keep,
                    given.states,
                ).saved
            d = backward(
                params_in,
                given.inputs,
                given.keep,
                given.states,
                entering,
                _pack(results, upstream),
            )
            d_args = _Args(d.inputs, None, d.states, [d.leaves[i] for i in floating])
            d_args = _tensors(d_args, like=args)
            if variables:
                # The loop reads no variable; any found upstream of the mask
                # gets no gradient through it.
                return d_args, [None] * len(variables)
            return d_args

        return _tensors(results), grad

    structure = Results(
        outputs=True if cfg.return_sequences else None,
        last_output=True,
        states=[True] * len(initial_states),
        traces={k: True for k, _ in cfg.traces},
    )
    return _pack(structure, fused(*_tensors(args)))
