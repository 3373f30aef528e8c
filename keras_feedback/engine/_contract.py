"""What a cell hands an engine: the typed description of one recurrence.

A cell describes its step once, as a ``Recurrence``; an engine runs it over
time, forward and backward, and knows nothing else about the cell. Every
function in it is pure: tensors in, tensors out, no variable read.
"""

import dataclasses
from typing import Callable
from typing import NamedTuple
from typing import Optional
from typing import Tuple


class Deferred(NamedTuple):
    """A linear map of the previous states that the engine may compute itself.

    ``step(params, x_t, states, products)`` takes ``products[path[-1]]``
    instead of computing ``input_fn(params, states) @ params[path]``; the
    fused engine uses that to batch the kernel's gradient over all steps.

    Attributes:
        path: the kernel's keys in ``params`` (``("weights",
            "recurrent_kernel")``).
        input_fn: ``input_fn(params, states)`` -> what multiplies the kernel;
            also takes whole ``(B, T, s)`` state sequences.
        additive: whether the step adds the product to its input (not GRU's
            ``U h_{t-1}``, whose candidate share the reset gate multiplies).
    """

    path: Tuple[str, ...]
    input_fn: Callable
    additive: bool


@dataclasses.dataclass(frozen=True)
class Recurrence:
    """A cell's step, as an engine runs it.

    Frozen and hashable: an engine compiles once per ``Recurrence`` (and
    shapes), so a cell builds it once per static configuration (the cells
    cache it), and equal configurations share compiled loops.

    Attributes:
        step: ``step(params, x_t, states, products=None) -> (y_t,
            new_states, trace_t)``; ``x_t`` is one step of ``project``'s
            result, ``states`` a list of ``(B, s)`` tensors, ``trace_t`` a
            dict of ``(B, k)`` tensors.
        output_size: size of ``y_t``.
        state_sizes: sizes of the states, in order.
        trace_sizes: ``((name, size), ...)`` of what ``trace_t`` records.
        project: ``project(params, sequences) -> (B, T, G)``, run on all steps
            at once before the loop; it also takes one step ``(B, D) -> (B,
            G)``, as the reference loop calls it under a tape. None: the
            inputs are the step inputs.
        deferred: the ``Deferred`` products the step accepts.
        symbolic_gradients: the step's gradient must be built from its graph
            (``tf.gradients``), not recorded by a ``tf.GradientTape``: a
            quantised step replaces ops' outputs as it is traced, which a
            tape records as the replaced op's own (``cells/_fake_quant``).
    """

    step: Callable
    output_size: int
    state_sizes: Tuple[int, ...]
    trace_sizes: Tuple[Tuple[str, int], ...] = ()
    project: Optional[Callable] = None
    deferred: Tuple[Deferred, ...] = ()
    symbolic_gradients: bool = False

    def traces(self, return_trace):
        """``{name: size}`` of the traces an engine records."""
        return dict(self.trace_sizes) if return_trace else {}
