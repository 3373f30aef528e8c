"""The step walk: a model's layer graph evaluated for one time step.

``StepWalker`` walks the model's layer graph (its Keras config, the public
record of every call): each feedback layer (any ``FeedbackRNN``) advances one
step through its public ``step`` with explicit states (``States``); layers
that act on every time step independently run on a length-1 sequence; every
layer after a ``return_sequences=False`` feedback layer runs as usual, on "the
output if the sequence ended now". ``NotStreamable`` says why a model cannot
be run one step at a time.
"""

import inspect

import keras
import tensorflow as tf

from keras_feedback.layers._recurrent import FeedbackRNN

# Layers that treat every time step independently: running them on a
# length-1 sequence gives that step of their output on the whole sequence.
_PER_STEP_LAYERS = (
    keras.layers.ActivityRegularization,
    keras.layers.Activation,
    keras.layers.Add,
    keras.layers.AlphaDropout,
    keras.layers.Average,
    keras.layers.Dense,
    keras.layers.Dropout,
    keras.layers.ELU,
    keras.layers.Embedding,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.Identity,
    keras.layers.LeakyReLU,
    keras.layers.Masking,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Multiply,
    keras.layers.ReLU,
    keras.layers.Rescaling,
    keras.layers.SpatialDropout1D,
    keras.layers.Subtract,
)
# The same, as long as their `axis` is not the batch or the time axis.
_PER_STEP_AXIS_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.Concatenate,
    keras.layers.LayerNormalization,
    keras.layers.Softmax,
    keras.layers.UnitNormalization,
)
# `keras.ops` operations recorded in a functional graph (Keras records the
# mask a `Masking` layer computes as `not_equal` and `any`): elementwise
# ones, and reductions over an axis that is not the batch or the time axis.
_ELEMENTWISE_OPS = frozenset(
    """Abs Add Cast Clip Divide Equal Exp Greater GreaterEqual Less LessEqual
    Log LogicalAnd LogicalNot LogicalOr LogicalXor Maximum Minimum Multiply
    Negative NotEqual Power Relu Sigmoid Sqrt Square Subtract Tanh TrueDivide
    Where""".split()
)
_REDUCTION_OPS = frozenset("All Any Max Mean Min Prod Softmax Sum".split())


class NotStreamable(Exception):
    """A layer of the model cannot be run one time step at a time."""

    def __init__(self, layer, reason):
        self.layer = layer
        self.reason = reason
        super().__init__(f"{describe(layer)}: {reason}")


def describe(layer):
    """``"LSTM 'lstm'"``: the class and name of ``layer``."""
    return f"{type(layer).__name__} {layer.name!r}"


class States:
    """The states a step reads (``get``) and writes (``put``).

    With ``specs=None`` it records what is asked for and hands out zeros
    (the probe that discovers the state list).
    """

    def __init__(self, specs, inputs):
        self.fixed = specs is not None
        self.specs = {} if specs is None else specs
        self.sources = {}
        self.inputs = inputs
        self.batch = None
        self.new = {}

    def get(self, name, shape, dtype, source=None):
        """The state ``name``; ``source`` is ``(layer, index)`` when it is
        the ``index``-th state of a ``Feedback`` layer."""
        dtype = tf.as_dtype(dtype)
        if source is not None:
            self.sources[name] = source
        if not self.fixed:
            if name in self.specs:
                raise ValueError(
                    f"Argument `model`: two layers would share the step state "
                    f"name {name!r}; rename one of them"
                )
            shape = tuple(shape)
            self.specs[name] = tf.TensorSpec((None, *shape), dtype, name=name)
            value = tf.zeros([self.batch, *shape], dtype)
        else:
            if name not in self.specs:
                raise ValueError(
                    f"The step function asked for the state {name!r}, which "
                    "tracing the model earlier did not"
                )
            value = self.inputs[name]
        self.new.setdefault(name, value)
        return value

    def put(self, name, value):
        self.new[name] = value


class Value:
    """A tensor of the step walk: time-sliced (``(B, 1, ...)``) or not."""

    __slots__ = ("tensor", "step", "mask")

    def __init__(self, tensor, step, mask=None):
        self.tensor = tensor
        self.step = step
        self.mask = mask


def _map(structure, fn):
    if isinstance(structure, Value):
        return fn(structure)
    if isinstance(structure, (list, tuple)):
        return type(structure)(_map(s, fn) for s in structure)
    if isinstance(structure, dict):
        return {k: _map(v, fn) for k, v in structure.items()}
    return structure


def _values(structure):
    """The ``Value`` leaves of ``structure``, in tf.nest order."""
    if isinstance(structure, Value):
        return [structure]
    if isinstance(structure, dict):
        return [v for key in sorted(structure) for v in _values(structure[key])]
    if isinstance(structure, (list, tuple)):
        return [v for item in structure for v in _values(item)]
    return []


def _call_parameters(layer):
    return inspect.signature(layer.call).parameters


def _is_keras_tensor_config(value):
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


class StepWalker:
    """Evaluates a model's layer graph for one time step."""

    def __init__(self, states):
        self.states = states

    def run_model(self, model, inputs, prefix):
        if isinstance(model, keras.Sequential):
            value = inputs[0]
            for layer in model.layers:
                key = prefix + layer.name
                value = self.call_layer(layer, key, [value], {})[0]
            return [value]
        try:
            config = model.get_config()
        except Exception as error:  # a custom layer without get_config
            raise NotStreamable(model, f"its config cannot be read: {error}")
        if "input_layers" not in config or "layers" not in config:
            raise NotStreamable(
                model, "a subclassed model: its layer graph is not known"
            )
        layers = {op.name: op for op in model.operations}
        tensors = {}
        for history, value in zip(_as_histories(config["input_layers"]), inputs):
            tensors[history] = value
        pending = []
        for layer_config in config["layers"]:
            name = layer_config["name"]
            for index, node in enumerate(layer_config.get("inbound_nodes") or []):
                pending.append((layers[name], index, node))
        while pending:
            ready = [item for item in pending if self._available(item[2], tensors)]
            if not ready:
                raise NotStreamable(model, "its layer graph could not be ordered")
            for layer, index, node in ready:
                pending.remove((layer, index, node))
                args = self._fill(node.get("args", []), tensors)
                kwargs = self._fill(node.get("kwargs", {}), tensors)
                key = prefix + layer.name + (f"_{index}" if index else "")
                outputs = self.call_layer(layer, key, args, kwargs)
                for i, value in enumerate(outputs):
                    tensors[(layer.name, index, i)] = value
        return [tensors[h] for h in _as_histories(config["output_layers"])]

    def _available(self, node, tensors):
        found = []

        def visit(value):
            if _is_keras_tensor_config(value):
                found.append(tuple(value["config"]["keras_history"]))
            elif isinstance(value, dict):
                for v in value.values():
                    visit(v)
            elif isinstance(value, (list, tuple)):
                for v in value:
                    visit(v)

        visit([node.get("args", []), node.get("kwargs", {})])
        return all(h in tensors for h in found)

    def _fill(self, value, tensors):
        if _is_keras_tensor_config(value):
            return tensors[tuple(value["config"]["keras_history"])]
        if isinstance(value, dict):
            if "class_name" in value and "config" in value:
                return keras.saving.deserialize_keras_object(value)
            return {k: self._fill(v, tensors) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._fill(v, tensors) for v in value)
        return value

    # --- one call of one layer --------------------------------------------

    def call_layer(self, layer, key, args, kwargs):
        values = _values([args, kwargs])
        step = any(v.step for v in values)
        if isinstance(layer, FeedbackRNN):
            return self._feedback(layer, key, args, kwargs)
        if step and isinstance(layer, keras.Model):
            flat = _values(args)
            mask = kwargs.get("mask")
            if mask is not None:
                masks = tf.nest.flatten(_map(mask, lambda v: v.tensor))
                flat = [Value(v.tensor, v.step, m) for v, m in zip(flat, masks)]
            return self.run_model(layer, flat, prefix=key + "_")
        if step:
            self._check_per_step(layer, values)
        return self._plain_call(layer, args, kwargs, step)

    def _check_per_step(self, layer, values):
        kind = type(layer).__name__
        if isinstance(layer, _PER_STEP_LAYERS) or (
            not isinstance(layer, keras.layers.Layer) and kind in _ELEMENTWISE_OPS
        ):
            return
        if isinstance(layer, _PER_STEP_AXIS_LAYERS) or (
            not isinstance(layer, keras.layers.Layer) and kind in _REDUCTION_OPS
        ):
            axis = getattr(layer, "axis", None)
            rank = len(values[0].tensor.shape)
            axes = axis if isinstance(axis, (list, tuple)) else [axis]
            if axis is not None and all(a % rank not in (0, 1) for a in axes):
                return
            raise NotStreamable(layer, f"its axis {axis} mixes time steps")
        raise NotStreamable(
            layer,
            "not known to act on each time step independently (layers that are: "
            + ", ".join(
                sorted(c.__name__ for c in _PER_STEP_LAYERS + _PER_STEP_AXIS_LAYERS)
            )
            + ")",
        )

    def _plain_call(self, layer, args, kwargs, step):
        first = args[0] if args else None
        previous_mask = kwargs.get("mask")
        if previous_mask is not None:
            previous_mask = _map(previous_mask, lambda v: v.tensor)
        elif first is not None:
            previous_mask = _map(first, lambda v: v.mask)
            if not any(m is not None for m in tf.nest.flatten(previous_mask)):
                previous_mask = None
        call_args = _map(args, lambda v: v.tensor)
        call_kwargs = _map(kwargs, lambda v: v.tensor)
        if (
            previous_mask is not None
            and "mask" in _call_parameters(layer)
            and call_kwargs.get("mask") is None
        ):
            call_kwargs["mask"] = previous_mask
        outputs = layer(*call_args, **call_kwargs)
        flat = tf.nest.flatten(outputs)
        masks = [None] * len(flat)
        if getattr(layer, "supports_masking", False) and first is not None:
            output_mask = layer.compute_mask(call_args[0], previous_mask)
            if output_mask is not None:
                flat_masks = tf.nest.flatten(output_mask)[: len(flat)]
                masks[: len(flat_masks)] = flat_masks
        return [Value(t, step, m) for t, m in zip(flat, masks)]

    def _feedback(self, layer, key, args, kwargs):
        sequence = args[0]
        if not isinstance(sequence, Value) or not sequence.step:
            raise NotStreamable(layer, "its input does not vary over time")
        if layer.go_backwards:
            raise NotStreamable(
                layer, "go_backwards=True reads the sequence from its end"
            )
        if layer.return_trace:
            raise NotStreamable(layer, "return_trace=True has no step form")
        initial_state = kwargs.get("initial_state")
        if initial_state is not None or len(args) > 1:
            raise NotStreamable(
                layer, "its initial state is computed in the model's graph"
            )
        mask = kwargs.get("mask")
        mask = mask.tensor if isinstance(mask, Value) else sequence.mask
        dtype = layer.compute_dtype
        old = [
            self.states.get(f"{key}_{name}", shape, dtype, source=(layer, i))
            for i, (name, shape) in enumerate(
                zip(layer.state_names, layer.cell.state_shapes)
            )
        ]
        step_mask = None if mask is None else tf.reshape(mask, [-1])
        held = None
        if mask is not None and not layer.zero_output_for_mask:
            held = self.states.get(f"{key}_output", layer.step_output_shape, dtype)
        output, new = layer.step(
            sequence.tensor[:, 0], old, mask=step_mask, previous_output=held
        )
        if held is not None:
            self.states.put(f"{key}_output", output)
        for name, value in zip(layer.state_names, new):
            self.states.put(f"{key}_{name}", value)
        if layer.return_sequences:
            result = [Value(output[:, None], True, mask)]
        else:
            result = [Value(output, False)]
        if layer.return_state:
            result.extend(Value(s, False) for s in new)
        return result


def _as_histories(entries):
    """A config's ``input_layers`` / ``output_layers``, flat in tf.nest order."""
    if isinstance(entries, dict):
        return [h for key in sorted(entries) for h in _as_histories(entries[key])]
    if entries and not isinstance(entries[0], (list, tuple, dict)):
        return [tuple(entries)]
    return [h for entry in entries for h in _as_histories(entry)]
