"""The functions an export traces: whole sequences, one step, initial states.

``ExportPlan`` reads a built functional or Sequential model once and gives:

- ``sequence_fn``: ``{input name: (batch, time, ...)}`` -> ``{output name}``,
  the model itself (dynamic batch and time);
- ``step_fn``: one time step, ``{input name: (batch, ...), state name:
  (batch, size)}`` -> ``{output name, state name: new state}``;
- ``initial_state_fn``: ``{"batch_size": ()}`` -> ``{state name: the state
  the model starts from}``: zeros, or a stateful layer's current states
  (``FeedbackRNN.snapshot_states``).

The step function walks the model's layer graph (its Keras config, the public
record of every call): each feedback layer (any ``FeedbackRNN``) advances one step
through its public ``step`` with explicit states; layers that act on every time step
independently (``Dense``, ``LayerNormalization`` over features, merges, the
``keras.ops`` a ``Masking`` layer records, ...) run on a length-1 sequence;
every layer after a ``return_sequences=False`` feedback layer runs as usual,
on "the output if the sequence ended now". A model that cannot be run one
step at a time (bidirectional or backwards layers, recurrent layers that are
not ours, layers that mix time steps) gets no step function;
``step_problems`` says why.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_feedback.export import _common
from keras_feedback.export._step_walker import NotStreamable
from keras_feedback.export._step_walker import States
from keras_feedback.export._step_walker import StepWalker
from keras_feedback.export._step_walker import Value
from keras_feedback.export._step_walker import describe
from keras_feedback.layers._feedback_loop import nested_layers
from keras_feedback.layers._recurrent import FeedbackRNN

SINGLE_INPUT = "x"
SINGLE_OUTPUT = "y"
BATCH_SIZE = "batch_size"


# What an export computes in: float32 (by default: LiteRT has no builtin
# float16 or bfloat16 kernels for most ops, and float32 on the float32
# variables of a mixed policy is closer to the model than Keras's own half
# precision), or None: the model's own dtypes.
COMPUTE_DTYPES = ("float32", None)


def _float32_layer(operation):
    config = operation.get_config()
    if getattr(operation, "compute_dtype", None) in _common.HALF_DTYPES:
        config["dtype"] = "float32"
    return operation.__class__.from_config(config)


def float32_model(model):
    """A copy of ``model`` whose half-precision layers compute in float32:
    same weights (their variables are float32 under a mixed policy) and the
    same states of stateful layers; ``model`` itself is not changed."""
    return cloned_model(model, _float32_layer)


def cloned_model(model, clone_layer):
    """A copy of ``model`` made of ``clone_layer(layer)`` for each of its
    layers (nested models too), with the weights of ``model`` and the states
    of its stateful layers; ``model`` itself is not changed."""
    copy = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    copy.set_weights(model.get_weights())
    for source, target in zip(nested_layers(model), nested_layers(copy)):
        states = getattr(source, "states", None)
        if isinstance(source, FeedbackRNN) and states is not None:
            for value, variable in zip(states, target.states):
                variable.assign(tf.cast(value, variable.dtype))
    return copy


def _structure(model, attribute):
    """``model.input`` / ``model.output``, or the flat list when unknown."""
    try:
        return getattr(model, attribute)
    except (AttributeError, ValueError):
        return list(getattr(model, attribute + "s"))


def flat_leaves(structure):
    """Leaves in ``tf.nest`` order (dicts by sorted key), like a call's."""
    if isinstance(structure, dict):
        return [
            leaf for key in sorted(structure) for leaf in flat_leaves(structure[key])
        ]
    if isinstance(structure, (list, tuple)):
        return [leaf for item in structure for leaf in flat_leaves(item)]
    return [structure]


class ExportPlan:
    """What an export of ``model`` contains; see the module docstring.

    Args:
        model: a built functional or Sequential Keras model.
        compute_dtype: ``"float32"``: the traced functions compute in
            float32 (a half-precision model is traced as ``float32_model``);
            None: in the model's own dtypes.

    Attributes:
        traced: the model the functions run (``model`` or its float32
            copy); ``keras_outputs`` runs ``model`` itself.
        input_names, output_names: signature names of the model's inputs
            and outputs (``"x"`` / ``"y"`` for a single one).
        input_specs: ``{name: tf.TensorSpec}`` of whole sequences.
        step_input_specs: the same without the time axis.
        state_specs: ``{name: tf.TensorSpec}`` of the step states, in order;
            empty when the model has no step function.
        state_sources: ``{name: (layer, index)}`` for each state that is the
            ``index``-th state of a ``Feedback`` layer.
        step_problems: why there is no step function (empty when there is).
    """

    def __init__(self, model, compute_dtype="float32"):
        self.model = _common.check_model(model)
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"Argument `compute_dtype` must be one of {COMPUTE_DTYPES}, got "
                f"{compute_dtype!r}"
            )
        self.traced = model
        half = _common.compute_dtype_of(model) in _common.HALF_DTYPES
        if compute_dtype == "float32" and half:
            self.traced = float32_model(model)
        inputs = flat_leaves(_structure(model, "input"))
        if len(inputs) == 1:
            self.input_names = [SINGLE_INPUT]
        else:
            self.input_names = _unique(
                [_common.signature_name(t.name) for t in inputs], "input"
            )
        structure = _structure(model, "output")
        outputs = flat_leaves(structure)
        if len(outputs) == 1:
            self.output_names = [SINGLE_OUTPUT]
        else:
            if isinstance(structure, dict):
                names = sorted(structure)
            else:
                names = getattr(model, "output_names", None) or [
                    f"output_{i}" for i in range(len(outputs))
                ]
            self.output_names = _unique(
                [_common.signature_name(n) for n in names], "output"
            )
        self.input_specs = {}
        self.step_input_specs = {}
        for name, tensor in zip(self.input_names, inputs):
            shape = (None,) + tuple(tensor.shape[1:])
            dtype = tf.as_dtype(tensor.dtype)
            self.input_specs[name] = tf.TensorSpec(shape, dtype, name=name)
            if len(shape) >= 2:
                self.step_input_specs[name] = tf.TensorSpec(
                    (None,) + shape[2:], dtype, name=name
                )
        self.state_specs = {}
        self.state_sources = {}
        self.step_problems = self._find_step_problems()
        if not self.step_problems:
            try:
                self.state_specs = self._discover_states()
            except NotStreamable as problem:
                self.step_problems = [(problem.layer, problem.reason)]
        taken = set(self.input_names) | set(self.output_names) | {BATCH_SIZE}
        clash = sorted(taken & set(self.state_specs))
        if clash:
            raise ValueError(
                f"Argument `model`: the state names {clash} clash with input or "
                "output names of the model; rename those layers"
            )

    # --- what the signatures run ------------------------------------------

    @property
    def streamable(self):
        return not self.step_problems

    def step_problem_message(self):
        return "; ".join(
            f"{describe(layer)}: {why}" for layer, why in self.step_problems
        )

    def named_inputs(self, inputs, argument="inputs"):
        """``inputs`` (an array, a list in model order, or a dict by input
        name) as ``{input name: numpy array}``."""
        if isinstance(inputs, dict):
            missing = sorted(set(self.input_names) - set(inputs))
            if missing:
                raise ValueError(
                    f"Argument `{argument}` lacks the inputs {missing}; expected "
                    f"the keys {self.input_names}, got {sorted(inputs)}"
                )
            flat = [inputs[name] for name in self.input_names]
        elif isinstance(inputs, (list, tuple)) and len(self.input_names) > 1:
            flat = list(inputs)
        else:
            flat = [inputs]
        if len(flat) != len(self.input_names):
            raise ValueError(
                f"Argument `{argument}` must hold {len(self.input_names)} arrays "
                f"({self.input_names}), got {len(flat)}"
            )
        named = {}
        for name, value in zip(self.input_names, flat):
            spec = self.input_specs[name]
            value = np.asarray(value, dtype=spec.dtype.as_numpy_dtype)
            if not spec.shape.is_compatible_with(value.shape):
                raise ValueError(
                    f"Argument `{argument}`: input {name!r} must have shape "
                    f"{tuple(spec.shape)}, got {value.shape}"
                )
            named[name] = value
        return named

    def keras_outputs(self, named):
        """The model's own outputs (its own engine, no state kept)."""
        with _common.export_mode(self.model, engine=False):
            outputs = self.model(
                self._pack([tf.constant(named[n]) for n in self.input_names]),
                training=False,
            )
        flat = [np.asarray(t) for t in tf.nest.flatten(outputs)]
        return dict(zip(self.output_names, flat))

    def _pack(self, flat):
        if len(flat) == 1:
            return flat[0]
        structure = _structure(self.model, "input")
        return tf.nest.pack_sequence_as(structure, list(flat))

    def sequence_fn(self, inputs):
        """The model on whole sequences: ``{input name}`` -> ``{output name}``."""
        flat = [inputs[name] for name in self.input_names]
        outputs = self.traced(self._pack(flat), training=False)
        flat_outputs = tf.nest.flatten(outputs)
        return dict(zip(self.output_names, flat_outputs))

    def step_fn(self, inputs):
        """One time step: inputs and states in, outputs and new states out."""
        if not self.streamable:
            raise ValueError(
                f"Model {self.model.name!r} has no step function: "
                f"{self.step_problem_message()}"
            )
        states = States(self.state_specs, inputs)
        outputs = self._run_step(inputs, states)
        return {**outputs, **states.new}

    def checked_step_fn(self, inputs):
        """``step_fn`` that first checks every input's and state's shape.

        A signature does not check shapes, and a wrongly shaped state would
        fail deep inside the cell with an error that names no state; this
        one names it (what TF Serving returns to the client).
        """
        specs = {**self.step_input_specs, **self.state_specs}
        return self.step_fn(_checked(inputs, specs, self.input_names[0], "step"))

    def checked_sequence_fn(self, inputs):
        """``sequence_fn`` that first checks every input's shape (see
        ``checked_step_fn``)."""
        first = self.input_names[0]
        inputs = _checked(inputs, self.input_specs, first, "serving_default")
        # A stateful layer checks the batch size against its snapshot; the
        # loop's other inputs must wait for that check, or a mismatch fails
        # inside the loop first, with an error that names no layer.
        batch = tf.shape(inputs[first])[0]
        snapshots = [
            state
            for layer in nested_layers(self.traced)
            if isinstance(layer, FeedbackRNN) and layer.state_values() is not None
            for state in layer.snapshot_states(batch)
        ]
        with tf.control_dependencies(snapshots):
            inputs = {name: tf.identity(value) for name, value in inputs.items()}
        return self.sequence_fn(inputs)

    def initial_state_fn(self, inputs):
        """``{"batch_size": scalar}`` -> ``{state name: (batch, size)}``, the
        states the model starts from: zeros, or the current states of a
        stateful layer (which fit its own batch size, or any when it is 1)."""
        batch = tf.reshape(tf.cast(inputs[BATCH_SIZE], tf.int32), [])
        states = {}
        for name, spec in self.state_specs.items():
            layer, index = self.state_sources.get(name, (None, None))
            if layer is None or layer.state_values() is None:
                states[name] = tf.zeros(
                    tf.concat([[batch], spec.shape[1:]], 0), spec.dtype
                )
            else:
                state = layer.snapshot_states(batch)[index]
                size = layer.cell.spec.state_size[index]
                states[name] = layer.cell.from_engine(state, size)
        return states

    def signature(self, kind):
        """The ``input_signature`` of ``sequence`` (or ``checked_sequence``),
        ``step`` (or ``checked_step``) or ``initial_state``."""
        if kind in ("sequence", "checked_sequence"):
            return [dict(self.input_specs)]
        if kind in ("step", "checked_step"):
            return [{**self.step_input_specs, **self.state_specs}]
        return [{BATCH_SIZE: tf.TensorSpec([], tf.int32, name=BATCH_SIZE)}]

    # --- analysis ------------------------------------------------------------

    def _find_step_problems(self):
        problems = []
        for layer in nested_layers(self.model):
            if isinstance(layer, keras.layers.Bidirectional):
                problems.append(
                    (layer, "a bidirectional layer reads the sequence from its end")
                )
            elif getattr(getattr(layer, "cell", None), "memory_attention", None):
                problems.append(
                    (
                        layer,
                        "an attention decoder steps over its memory "
                        "(serve it with keras_feedback.export."
                        "export_seq2seq_saved_model)",
                    )
                )
            elif isinstance(layer, keras.layers.RNN):
                problems.append(
                    (
                        layer,
                        "a recurrent layer that is not from keras_feedback "
                        "(use keras_feedback.layers.Feedback)",
                    )
                )
        if problems:
            return problems
        missing = [n for n in self.input_names if n not in self.step_input_specs]
        if missing:
            return [
                (
                    self.model,
                    f"inputs {missing} have no time axis (every input of a "
                    "streamed model is (batch, time, ...))",
                )
            ]
        return []

    def _discover_states(self):
        """Runs the step walk once with zero states to learn which it needs."""
        recorder = States(None, None)
        spec = [dict(self.step_input_specs)]

        @tf.function(input_signature=spec, autograph=False)
        def probe(inputs):
            recorder.batch = tf.shape(tf.nest.flatten(inputs)[0])[0]
            return self._run_step(inputs, recorder)

        with _common.export_mode(self.model):
            probe.get_concrete_function()
        self.state_sources = dict(recorder.sources)
        return dict(recorder.specs)

    def _run_step(self, inputs, states):
        values = [
            Value(tf.expand_dims(inputs[name], 1), step=True)
            for name in self.input_names
        ]
        walker = StepWalker(states)
        outputs = walker.run_model(self.traced, values, prefix="")
        result = {}
        for name, value in zip(self.output_names, outputs):
            result[name] = value.tensor[:, 0] if value.step else value.tensor
        return result


def _checked(inputs, specs, first, signature):
    """``inputs`` once each has the rank and the sizes of its spec, with the
    batch size of input ``first``; else an error naming the input."""
    batch = tf.shape(inputs[first])[0]
    checks = []
    for name, spec in specs.items():
        # The shape the request has, not the signature's: graph
        # optimisation takes every input to have the signature's rank (and
        # folds a rank check away); a tensor parsed from bytes has no
        # static shape.
        value = inputs[name]
        shape = tf.shape(tf.io.parse_tensor(tf.io.serialize_tensor(value), value.dtype))
        rank = len(spec.shape)
        # Shapes of different ranks do not compare: compare the first
        # `rank` sizes (padded with -1) and the rank.
        head = tf.concat([shape, tf.fill([rank], -1)], 0)[:rank]
        expected = [batch] + [
            head[i] if d is None else d for i, d in enumerate(spec.shape[1:], 1)
        ]
        described = ", ".join(
            ["batch"] + ["any" if d is None else str(d) for d in spec.shape[1:]]
        )
        same = tf.logical_and(
            tf.equal(tf.size(shape), rank),
            tf.reduce_all(tf.equal(head, tf.stack(expected))),
        )
        checks.append(
            tf.debugging.Assert(
                same,
                [
                    f"{signature}: input {name} must have shape ({described}), "
                    f"with the batch size of input {first}; got shape",
                    shape,
                ],
            )
        )
    with tf.control_dependencies(checks):
        return {name: tf.identity(value) for name, value in inputs.items()}


def _unique(names, kind):
    if len(set(names)) != len(names):
        raise ValueError(
            f"Argument `model`: its {kind} names {names} are not unique once "
            "made valid signature names; give its inputs/outputs distinct names"
        )
    return names
