"""``KerasCellCore``: any Keras RNN cell as the core of a feedback cell."""

from typing import Any

import keras
import tensorflow as tf

from keras_feedback._api import public
from keras_feedback.cores._base import Core


def is_keras_cell(obj):
    """Whether ``obj`` has Keras's cell contract (a layer with
    ``state_size`` whose ``call`` takes ``(inputs, states)``)."""
    return isinstance(obj, keras.layers.Layer) and hasattr(obj, "state_size")


@public("keras_feedback.cores.KerasCellCore")
class KerasCellCore(Core):
    """A Keras RNN cell (``keras.layers.GRUCell``, a tensorflow-addons cell
    ported to Keras 3, yours) run with the feedback loop around it.

    The cell reads ``[x_t; c_{t-1}]``, its input concatenated with the
    feedback signal of the previous step (the cell's own input kernel
    weighs both; there is no separate ``U_c``), and its output is ``h_t``,
    from which the feedback cell computes ``c_t``, the attention gate and
    the output projection. ``Feedback(units, core=cell)`` wraps a cell in
    it; ``units`` must equal the cell's output size. The states are ``h``
    (the cell's output) followed by the cell's own states (``cell_0``,
    ``cell_1``, ...).

    The cell's weights stay its own (built for ``features + feedback_units``
    inputs, saved with the layer in ``.keras`` files). They are handed to
    each step as tensors (``keras.StatelessScope``), so the step is a
    function of its arguments, but a Keras cell may hold Python state or
    ops XLA cannot compile: the layer runs it on the reference engine (a
    ``tf.while_loop``; ``engine="xla"`` is refused). Export works as for
    the other cores; LiteRT with builtin ops where the cell's own ops have
    builtins (``export_litert`` names an op that has none). The cell's own
    dropout is refused: use the layer's ``dropout``.

    Args:
        cell: a Keras RNN cell, not built or built for ``features +
            feedback_units`` inputs.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_feedback.layers import Feedback
    >>> layer = Feedback(4, feedback_units=2, core=keras.layers.GRUCell(4))
    >>> layer(np.zeros((2, 5, 3), "float32")).shape
    TensorShape([2, 4])
    """

    input_kernel = False
    fused = False

    def __init__(self, cell: Any):
        if isinstance(cell, dict):
            cell = keras.saving.deserialize_keras_object(cell)
        if not is_keras_cell(cell):
            raise TypeError(
                "Argument `cell` must be a Keras RNN cell (a layer with "
                f"`state_size` and `call(inputs, states)`), got {cell!r}"
            )
        for name in ("dropout", "recurrent_dropout"):
            if getattr(cell, name, 0):
                raise ValueError(
                    f"Argument `cell`: {cell.name!r} has {name}="
                    f"{getattr(cell, name)!r}; a wrapped cell runs without its "
                    "own dropout (its random state is not a tensor the step "
                    "can take): pass `dropout`/`recurrent_dropout` to the "
                    "Feedback layer instead"
                )
        self.cell = cell
        sizes = cell.state_size
        self.cell_state_sizes = tuple(
            int(s) for s in (sizes if isinstance(sizes, (list, tuple)) else [sizes])
        )
        self.state_names = ("h",) + tuple(
            f"cell_{i}" for i in range(len(self.cell_state_sizes))
        )

    def _output_size(self):
        size = getattr(self.cell, "output_size", None)
        return self.cell_state_sizes[0] if size is None else int(size)

    def check_units(self, units):
        if units != self._output_size():
            raise ValueError(
                f"Argument `units`={units!r} must equal the output size of the "
                f"wrapped cell {self.cell.name!r} ({self._output_size()})"
            )

    def width(self, units):
        return None  # the cell reads the raw inputs

    def state_sizes(self, units):
        return (units, *self.cell_state_sizes)

    def weights(self, units):
        return ()

    def layer(self):
        return self.cell

    def build(self, input_size):
        if not self.cell.built:
            self.cell.build((None, input_size))

    def variables(self):
        """The cell's float variables: the ones each step gets as tensors."""
        return [v for v in self.cell.variables if v.dtype.startswith("float")]

    def update(self, ops, projected, states, candidate_term=None):
        if candidate_term is not None:
            raise ValueError(
                "A KerasCellCore has no candidate to add a term to: feedback "
                "from layers above needs a keras_feedback core"
            )
        mapping = list(zip(self.variables(), ops.params["core_variables"]))
        cell_states = list(states[1:])
        with keras.StatelessScope(state_mapping=mapping):
            output, new = self.cell(projected, cell_states)
        new = tf.nest.flatten(new)
        return [output, *new]

    def get_config(self):
        return {"cell": keras.saving.serialize_keras_object(self.cell)}

    # The wrapped cell holds weights: two wrappers are the same core only
    # if they wrap the same cell.
    def __eq__(self, other):
        return isinstance(other, KerasCellCore) and other.cell is self.cell

    def __hash__(self):
        return id(self.cell)
