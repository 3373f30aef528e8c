"""``FeedbackStack``: stacked feedback layers with top-down, gated feedback.

The stack's cell (``FeedbackStackCell``) holds one ``FeedbackCell`` per
layer and the weights across layers; its step math is
``keras_feedback.cells._stack_math``. ``FeedbackRNN`` runs it like any
cell, so both engines, ``step``, masking, ``stateful``, ``return_state``,
``go_backwards``, saving and export work as for ``Feedback``.
"""

import inspect
from typing import Any
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import keras
import tensorflow as tf

from keras_feedback import cores
from keras_feedback._api import public
from keras_feedback._checks import check_bool
from keras_feedback.cells import _stack_math as math
from keras_feedback.layers._cell import ActivationLike
from keras_feedback.layers._cell import CoreLike
from keras_feedback.layers._cell import InitializerLike
from keras_feedback.layers._cell import check_int
from keras_feedback.layers._feedback_cell import FeedbackCell
from keras_feedback.layers._feedback_cell import SequenceLayout
from keras_feedback.layers._recurrent import FeedbackRNN
from keras_feedback.layers._recurrent import TensorLike


def _per_layer(name, value, depth):
    """``value`` as a list of ``depth`` values: one per layer, or the same
    for every layer."""
    if isinstance(value, (list, tuple)):
        if len(value) != depth:
            raise ValueError(
                f"Argument `{name}` must have one value per layer ({depth}, as "
                f"`units`), got {len(value)}: {list(value)!r}"
            )
        return list(value)
    return [value] * depth


class FeedbackStackCell(SequenceLayout, keras.layers.Layer):
    """The cell of ``FeedbackStack``: one step of all its layers."""

    memory_attention = None

    def __init__(
        self,
        units,
        feedback_units,
        core,
        top_down,
        return_all_layers,
        top_down_initializer,
        cell_arguments,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.top_down = top_down
        self.return_all_layers = return_all_layers
        self._stack_weights = []  # per layer, by name; filled by build
        self.top_down_initializer = keras.initializers.get(top_down_initializer)
        self.cells = [
            FeedbackCell(
                u,
                feedback_units=f,
                core=c,
                name=f"layer_{j}",
                dtype=self.dtype_policy,
                **cell_arguments,
            )
            for j, (u, f, c) in enumerate(zip(units, feedback_units, core))
        ]
        self.spec = math.StackSpec(
            tuple(cell.spec for cell in self.cells), top_down, return_all_layers
        )
        for j, cell in enumerate(self.cells):
            _check_core(cell.core_object, top_down, j)

    @property
    def state_size(self):
        return self.spec.state_size

    @property
    def output_size(self):
        return self.spec.output_size

    @property
    def state_names(self):
        return [f"{n}_{j}" for j, c in enumerate(self.cells) for n in c.state_names]

    @property
    def feedback_weights(self):
        """Every layer's feedback weights (``FeedbackCell.feedback_weights``)
        and the weights across layers (top-down kernels and gates)."""
        weights = [w for cell in self.cells for w in cell.feedback_weights]
        return weights + [w for layer in self._stack_weights for w in layer.values()]

    @property
    def feedforward_weights(self):
        return [w for cell in self.cells for w in cell.feedforward_weights]

    @property
    def fused(self):
        """Whether the fused engine may run the stack: all its cores may."""
        return all(cell.fused for cell in self.cells)

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                "The last (feature) dimension of the inputs must be defined, "
                f"got input shape {tuple(input_shape)}"
            )
        sizes = [features] + self.spec.output_sizes[:-1]
        for cell, size in zip(self.cells, sizes):
            cell.build((None, size))
        depth, units = self.spec.depth, self.spec.units
        self._stack_weights = []
        for j in range(depth):
            weights = {}
            if self.top_down == "gated":
                weights["gate_kernel"] = self.add_weight(
                    name=f"layer_{j}_gate_kernel",
                    shape=(sizes[j], depth),
                    initializer=self.top_down_initializer,
                )
                weights["gate_recurrent_kernel"] = self.add_weight(
                    name=f"layer_{j}_gate_recurrent_kernel",
                    shape=(sum(units), depth),
                    initializer=self.top_down_initializer,
                )
            if self.spec.connects:
                weights["top_down_kernel"] = self.add_weight(
                    name=f"layer_{j}_top_down_kernel",
                    shape=(sum(units) - units[j], units[j]),
                    initializer=self.top_down_initializer,
                )
            self._stack_weights.append(weights)
        self.step_shape = (features,)

    def step_work(self):
        return sum(tf.TensorShape(v.shape).num_elements() for v in self.weights)

    def engine_params(self, training, batch_size):
        weights, per_example, params = [], (), {}
        for j, cell in enumerate(self.cells):
            cell_params, cell_per_example = cell.engine_params(training, batch_size)
            weights.append(cell_params["weights"])
            if "recurrent_mask" in cell_params:
                params[f"recurrent_mask_{j}"] = cell_params["recurrent_mask"]
                if per_example is not None:
                    per_example = (*per_example, f"recurrent_mask_{j}")
            if cell_per_example is None:
                per_example = None
        dtype = self.compute_dtype
        stack = [
            {k: tf.cast(v.value, dtype) for k, v in layer.items()}
            for layer in self._stack_weights
        ]
        params["weights"] = {"layers": weights, "stack": stack}
        return params, per_example

    def input_dropout(self, sequences, training):
        return self.cells[0].input_dropout(sequences, training)

    def recurrence(self):
        return math.make_recurrence(self.spec)

    def states_from_engine(self, states):
        return list(states)

    def readout(self, params, states):
        return math.readout(self.spec, params["weights"], states)

    def cell_config(self):
        first = self.cells[0].cell_config()
        shared = {k: first[k] for k in _SHARED}
        return {
            "units": [cell.units for cell in self.cells],
            "feedback_units": [cell.feedback_units for cell in self.cells],
            "core": [cores.serialize(cell.core_object) for cell in self.cells],
            "top_down": self.top_down,
            "return_all_layers": self.return_all_layers,
            "top_down_initializer": keras.initializers.serialize(
                self.top_down_initializer
            ),
            **shared,
        }


# The FeedbackCell arguments every layer of a stack shares.
_SHARED = (
    "activation",
    "recurrent_activation",
    "feedback_activation",
    "attention",
    "residual",
    "layer_norm",
    "use_bias",
    "kernel_initializer",
    "recurrent_initializer",
    "feedback_initializer",
    "bias_initializer",
    "dropout",
    "recurrent_dropout",
    "seed",
)


def _check_core(core, top_down, j):
    if top_down is None:
        return
    if not core.input_kernel:
        raise ValueError(
            f"Argument `core` (layer {j}): {core!r} has no candidate that the "
            f"layers' top-down terms can enter: top_down={top_down!r} needs a "
            "keras_feedback core (or top_down=None)"
        )
    if top_down == "gated":
        parameters = inspect.signature(core.update).parameters
        if "candidate_scale" not in parameters:
            raise ValueError(
                f"Argument `core` (layer {j}): {core!r}'s `update` takes no "
                "`candidate_scale`, the gate of its own recurrent term: "
                "top_down='gated' needs it (see keras_feedback.cores.Core."
                "update); use top_down='ungated' or None"
            )


@public("keras_feedback.layers.FeedbackStack")
class FeedbackStack(FeedbackRNN):
    """Stacked recurrent layers run as one recurrence, with top-down
    (gated) feedback across them: the gated-feedback RNN.

    Layer ``j`` reads the output of the layer below at the same step
    (``x_t`` for the bottom one), as in a stack of ``Feedback`` layers, and
    each layer keeps its own feedback loop (``feedback_units``). Across
    layers, ``top_down`` adds what a stack of separate layers cannot have:

    - ``"gated"`` (Chung, Gulcehre, Cho, Bengio, "Gated Feedback Recurrent
      Neural Networks", ICML 2015): every layer's candidate reads the
      hidden states ``h^i_{t-1}`` of **all** layers, each connection
      ``i -> j`` scaled by a scalar gate
      ``g^{i->j}_t = sigmoid(w_g^{i->j} . h^{j-1}_t + u_g^{i->j} . h*_{t-1})``
      (``h*_{t-1}``: all layers' ``h_{t-1}`` concatenated; ``h^0_t = x_t``).
      Exactly these products are gated: simple (tanh) core
      ``h^j_t = tanh(W h^{j-1}_t + Σ_i g^{i->j} U^{i->j} h^i_{t-1})``;
      LSTM: the cell input ``tanh(W h^{j-1}_t + Σ_i g^{i->j} U^{i->j}
      h^i_{t-1})``, the input, forget and output gates reading their own
      layer's ``h^j_{t-1}`` only; GRU: the candidate ``tanh(W h^{j-1}_t +
      r^j_t ⊙ Σ_i g^{i->j} U^{i->j} h^i_{t-1})``, the reset and update gates
      reading their own layer only. ``U^{j->j}`` is the core's recurrent
      kernel, ``U^{i->j}`` (``i ≠ j``) the layer's ``top_down_kernel``.
    - ``"ungated"``: the same connections with every ``g = 1``.
    - ``None``: a plain stack. With ``feedback_units=0`` it computes what
      Keras's stacked ``SimpleRNN``/``GRU``/``LSTM`` layers compute (lower
      layers with ``return_sequences=True``) with the same weights, and
      with ``go_backwards=True`` what that Keras stack computes when its
      bottom layer has ``go_backwards=True``.

    Args:
        units: the hidden size of each layer, bottom first (a list).
        core: one core for every layer, or a list with one per layer
            (``"simple"``, ``"gru"``, ``"lstm"``, ``"indrnn"`` or a
            ``keras_feedback.cores.Core``). ``top_down="gated"`` needs
            cores whose ``update`` takes ``candidate_scale`` (the built-in
            ones do).
        feedback_units: each layer's own feedback size: one int for every
            layer or a list; 0 (default) turns a layer's feedback off.
        top_down: ``"gated"`` (default), ``"ungated"`` or None.
        return_all_layers: True: the output is a list with every layer's
            output (bottom first), each a sequence with
            ``return_sequences``.
        activation: as ``Feedback``'s, for every layer.
        recurrent_activation: as ``Feedback``'s, for every layer.
        feedback_activation: as ``Feedback``'s, for every layer.
        attention: as ``Feedback``'s, for every layer.
        residual: as ``Feedback``'s, for every layer.
        layer_norm: as ``Feedback``'s, for every layer.
        use_bias: as ``Feedback``'s, for every layer (the gates have no
            bias, as in the paper).
        kernel_initializer: as ``Feedback``'s, for every layer.
        recurrent_initializer: as ``Feedback``'s, for every layer.
        feedback_initializer: as ``Feedback``'s, for every layer.
        bias_initializer: as ``Feedback``'s, for every layer.
        top_down_initializer: initializer of the top-down kernels and of
            the gates' kernels.
        dropout: dropout rate on the stack's inputs.
        recurrent_dropout: as ``Feedback``'s, for every layer.
        seed: seed of the dropout masks.
        return_sequences: as ``Feedback``'s.
        return_state: as ``Feedback``'s. The states are every layer's,
            bottom first, named ``<state>_<layer>`` (``h_0``, ``carry_0``,
            ``c_0``, ``h_1``, ...).
        go_backwards: as ``Feedback``'s: the whole stack reads time reversed.
        stateful: as ``Feedback``'s.
        unroll: as ``Feedback``'s.
        return_trace: as ``Feedback``'s; each layer's trace under
            ``<name>_<layer>``, the gated stack's gates under
            ``gate_<layer>`` (``g^{i->j}`` for every ``i``).
        zero_output_for_mask: as ``Feedback``'s.
        engine: as ``Feedback``'s.
        time_buckets: as ``Feedback``'s.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Both engines run the stack as one step function: the bottom layer's
    input projection (and its gates' input part) is one matmul before the
    loop; the upper layers' projections read the layer below at the same
    step and run inside it (docs/feedback_stack.md).

    Example:

    >>> import numpy as np
    >>> from keras_feedback.layers import FeedbackStack
    >>> stack = FeedbackStack([8, 8], core="gru", top_down="gated")
    >>> stack(np.zeros((2, 5, 3), "float32")).shape
    TensorShape([2, 8])
    """

    def __init__(
        self,
        units: Sequence[int],
        core: Union[CoreLike, Sequence[CoreLike]] = "gru",
        feedback_units: Union[int, Sequence[int]] = 0,
        top_down: Optional[str] = "gated",
        return_all_layers: bool = False,
        activation: ActivationLike = None,
        recurrent_activation: ActivationLike = None,
        feedback_activation: ActivationLike = "sigmoid",
        attention: bool = False,
        residual: bool = False,
        layer_norm: bool = False,
        use_bias: bool = True,
        kernel_initializer: InitializerLike = "glorot_uniform",
        recurrent_initializer: InitializerLike = "orthogonal",
        feedback_initializer: InitializerLike = "glorot_uniform",
        bias_initializer: InitializerLike = "zeros",
        top_down_initializer: InitializerLike = "glorot_uniform",
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: Optional[int] = None,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        return_trace: bool = False,
        zero_output_for_mask: bool = False,
        engine: str = "auto",
        time_buckets: Union[str, Sequence[int], None] = "auto",
        **kwargs: Any,
    ) -> None:
        if not isinstance(units, (list, tuple)) or not units:
            raise TypeError(
                "Argument `units` must be a non-empty list of positive ints "
                f"(one per layer), got {units!r}"
            )
        for j, u in enumerate(units):
            check_int(f"units[{j}]", u, 1)
        depth = len(units)
        if top_down not in math.TOP_DOWN:
            raise ValueError(
                f"Argument `top_down` must be one of {math.TOP_DOWN}, got {top_down!r}"
            )
        return_all_layers = check_bool("return_all_layers", return_all_layers)
        feedback_units = _per_layer("feedback_units", feedback_units, depth)
        for j, f in enumerate(feedback_units):
            check_int(f"feedback_units[{j}]", f, 0)
        core = _per_layer("core", core, depth)
        shared = [c for c in core if isinstance(c, keras.layers.Layer)]
        if len({id(c) for c in shared}) < len(shared):
            raise ValueError(
                "Argument `core`: the same Keras cell for several layers; each "
                "layer builds and owns its cell: pass a list with one cell per "
                "layer"
            )
        super().__init__(
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            return_trace=return_trace,
            zero_output_for_mask=zero_output_for_mask,
            engine=engine,
            time_buckets=time_buckets,
            **kwargs,
        )
        self.cell = FeedbackStackCell(
            list(units),
            feedback_units,
            core,
            top_down,
            return_all_layers,
            top_down_initializer,
            {
                "activation": activation,
                "recurrent_activation": recurrent_activation,
                "feedback_activation": feedback_activation,
                "attention": attention,
                "residual": residual,
                "layer_norm": layer_norm,
                "use_bias": use_bias,
                "kernel_initializer": kernel_initializer,
                "recurrent_initializer": recurrent_initializer,
                "feedback_initializer": feedback_initializer,
                "bias_initializer": bias_initializer,
                "dropout": dropout,
                "recurrent_dropout": recurrent_dropout,
                "seed": seed,
            },
            name="feedback_stack_cell",
            dtype=self.dtype_policy,
        )
        if engine == "xla" and not self.cell.fused:
            raise ValueError(
                "Argument `engine`='xla': a core of the stack runs on the "
                "reference engine only; pass engine='auto' or 'reference'"
            )
        self.input_spec = keras.InputSpec(ndim=3)

    # Read-only views of the cell's configuration.
    units = property(lambda self: [cell.units for cell in self.cell.cells])
    feedback_units = property(
        lambda self: [cell.feedback_units for cell in self.cell.cells]
    )
    core = property(lambda self: [cell.core for cell in self.cell.cells])
    top_down = property(lambda self: self.cell.top_down)
    return_all_layers = property(lambda self: self.cell.return_all_layers)

    @property
    def layers(self) -> List[FeedbackCell]:
        """The layers' cells, bottom first (their weights by name)."""
        return list(self.cell.cells)

    def _split_output(self, output):
        if not self.return_all_layers:
            return output
        return list(tf.split(output, self.cell.spec.output_sizes, axis=-1))

    def _results(self, outputs, last_output, final_states, traces):
        result = super()._results(outputs, last_output, final_states, traces)
        if not self.return_all_layers:
            return result
        if isinstance(result, tuple):
            return (self._split_output(result[0]), *result[1:])
        return self._split_output(result)

    def step(
        self,
        inputs: TensorLike,
        states: Union[Sequence[TensorLike], Mapping[str, TensorLike]],
        mask: Optional[TensorLike] = None,
        training: bool = False,
        previous_output: Optional[TensorLike] = None,
    ) -> Tuple[Any, List[tf.Tensor]]:
        if self.return_all_layers and isinstance(previous_output, (list, tuple)):
            # Each layer's output, as this method returns them.
            previous_output = tf.concat(
                [tf.convert_to_tensor(p) for p in previous_output], -1
            )
        output, new_states = super().step(
            inputs, states, mask, training, previous_output
        )
        return self._split_output(output), new_states

    step.__doc__ = FeedbackRNN.step.__doc__

    def compute_output_shape(self, sequences_shape, *args, **kwargs):
        shapes = super().compute_output_shape(sequences_shape, *args, **kwargs)
        if not self.return_all_layers:
            return shapes
        first = shapes[0] if isinstance(shapes, tuple) and self._multiple() else shapes
        lead = tuple(first[:-1])
        split = [(*lead, n) for n in self.cell.spec.output_sizes]
        if isinstance(shapes, tuple) and self._multiple():
            return (split, *shapes[1:])
        return split

    def _multiple(self):
        return self.return_state or self.return_trace

    def compute_mask(self, sequences, mask=None, *args, **kwargs):
        masks = super().compute_mask(sequences, mask, *args, **kwargs)
        if not self.return_all_layers:
            return masks
        depth = len(self.cell.cells)
        if self._multiple():
            return ([masks[0]] * depth, *masks[1:])
        return [masks] * depth

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        core = config.get("core")
        if isinstance(core, list):
            config["core"] = [c if isinstance(c, str) else cores.get(c) for c in core]
        return cls(**config)
