"""What every part of the fused engine shares: the static ``Config`` of one
loop, the named tuples its passes exchange, and the helpers over the leaves
of ``params`` (which are floating, which get summed per step, which are the
deferred linears' kernels)."""

import dataclasses
from typing import Callable
from typing import NamedTuple
from typing import Optional

import tensorflow as tf

from keras_feedback.engine._contract import Recurrence

_HALF = (tf.float16, tf.bfloat16)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything static about one loop: the key of the compiled functions."""

    recurrence: Recurrence
    go_backwards: bool
    return_sequences: bool
    zero_output_for_mask: bool
    traces: tuple  # ((name, size), ...) of the recorded per-step traces
    steps: Optional[int]  # static time for unroll=True, else None
    save: bool = True  # write the states entering every step (for backward)
    # Keep each step's input plus its deferred products for the backward
    # pass (which then recomputes neither); see ``_xla_windows``.
    keep_sums: bool = False
    # Run (and differentiate) the loop by windows of this many steps; see
    # ``_xla_windows.SEGMENT_STEPS``.
    segment: Optional[int] = None
    # Whether the backward pass computes the inputs' gradient (not when no
    # tape records the inputs, e.g. a model's own inputs in training).
    input_gradient: bool = True

    @property
    def output_size(self):
        return self.recurrence.output_size

    @property
    def step(self):
        return self.recurrence.step

    @property
    def project(self):
        """``project(params, inputs)`` or None (see ``Recurrence``)."""
        return self.recurrence.project


class Results(NamedTuple):
    """A loop's results, as ``run`` returns them, or their cotangents."""

    outputs: Optional[tf.Tensor]  # (B, T, output_size); None: not returned
    last_output: tf.Tensor  # (B, output_size)
    states: list  # the final states, (B, s) each
    traces: dict  # name -> (B, T, k)


class Saved(NamedTuple):
    """What the forward pass keeps for the backward pass."""

    # The states entering every step, batch-major (B, T, s) (by windows:
    # entering every window, (B, windows, s)); empty without ``save``.
    entering: list
    # With ``keep_sums``: every step's input plus its additive deferred
    # products, (B, T, G); else None.
    sums: Optional[tf.Tensor]
    # With ``keep_sums``: the other (non-additive) deferred products,
    # (B, T, n) each; else empty.
    products: list


class Forward(NamedTuple):
    """What the compiled forward pass returns."""

    results: Results
    saved: Saved


class Gradients(NamedTuple):
    """What the compiled backward pass returns."""

    inputs: Optional[tf.Tensor]  # None without ``Config.input_gradient``
    states: list  # of the initial states
    leaves: list  # one per leaf of params: None for a non-floating one


class Linear(NamedTuple):
    """A deferred linear (``Deferred``), located among the leaves of params."""

    index: int  # of its kernel in ``tf.nest.flatten(params)``
    input_fn: Callable
    name: str  # its key in the step's ``products``
    additive: bool


def floating(leaves):
    """Indices of the floating ``leaves``."""
    return [i for i, leaf in enumerate(leaves) if leaf.dtype.is_floating]


def sum_dtype(dtype):
    """The dtype gradients are summed in: float32 for halves."""
    return tf.float32 if dtype in _HALF else dtype


def accumulators(leaves, indices):
    """Zero sums for the gradients of ``leaves[indices]``."""
    return [tf.zeros_like(leaves[i], sum_dtype(leaves[i].dtype)) for i in indices]


def leaf_gradients(leaves, d_sums):
    """``d_sums`` in each floating leaf's dtype; None for the others."""
    return [
        tf.cast(d_sums[i], leaf.dtype) if leaf.dtype.is_floating else None
        for i, leaf in enumerate(leaves)
    ]


def project(cfg, params, inputs):
    """The step inputs of all steps: ``inputs`` projected, if the recurrence
    projects them."""
    return inputs if cfg.project is None else cfg.project(params, inputs)


def input_index(cfg, num_steps, t):
    """The input time index that processing step ``t`` reads."""
    return num_steps - 1 - t if cfg.go_backwards else t


def deferred(cfg, params):
    """The ``Linear`` of each deferred linear the engine computes itself.

    ``cfg.recurrence.deferred`` lists the kernels (``params`` at ``path``)
    whose product with ``input_fn(params, states)`` the engine may compute
    and hand to the step (``step(..., products={name: ...})``).
    ``additive``: the step adds the product to its input ``x_t``, so the
    product's gradient is the gradient of ``x_t``. The kernel's gradient
    over all steps is then one large matmul after the loop, of the saved
    states' ``input_fn`` and the product's gradient, rather than one small
    matmul per step. Without ``keep_sums`` only additive ones are deferred
    (the others' gradients would need a stored per-step product gradient).
    """
    found = []
    for linear in cfg.recurrence.deferred:
        if linear.additive or cfg.keep_sums:
            index = tf.nest.flatten(_mark(params, linear.path)).index(True)
            found.append(
                Linear(index, linear.input_fn, linear.path[-1], linear.additive)
            )
    return found


def _mark(structure, path, prefix=()):
    """``structure`` with True at ``path`` and False at every other leaf."""
    if isinstance(structure, dict):
        return {k: _mark(v, path, prefix + (k,)) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        return type(structure)(
            _mark(v, path, prefix + (i,)) for i, v in enumerate(structure)
        )
    return prefix == tuple(path)


def summed(cfg, params):
    """Indices of the floating leaves whose gradient is summed per step."""
    kernels = {linear.index for linear in deferred(cfg, params)}
    return [i for i in floating(tf.nest.flatten(params)) if i not in kernels]
