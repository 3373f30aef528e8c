"""``FeedbackRNN``: the one recurrent layer base of every feedback layer.

It owns the sequence plumbing (``return_sequences``, ``return_state``,
``return_trace``, ``go_backwards``, ``stateful`` and ``reset_state``, the
checks of initial states and masks, dtypes, the engine call, the public
``step``, ``compute_mask`` and ``get_config``) for a cell that derives from
``FeedbackCellBase``. ``Feedback`` and ``ConvFeedback2D`` are this base with
the dense and the convolutional cell; nothing here knows which.
"""

from typing import Any
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import keras
import numpy as np
import tensorflow as tf

from keras_feedback import engine as engines
from keras_feedback._checks import check_bool
from keras_feedback.engine import _masking
from keras_feedback.engine._buckets import check_buckets
from keras_feedback.layers._batch import batch_checked
from keras_feedback.layers._batch import batch_words
from keras_feedback.layers._memory import MemoryCalls
from keras_feedback.layers._memory import asserted_mask_shape
from keras_feedback.layers._memory import check_mask_shape

# What the public methods take as a tensor: a tf.Tensor, a numpy array, ...
TensorLike = Any


class FeedbackRNN(MemoryCalls, keras.layers.Layer):
    """Runs a feedback cell over the time axis with one of the engines.

    Subclasses create ``self.cell`` (a ``FeedbackCellBase``) in their
    constructor, after calling this one. See ``Feedback`` for the arguments.
    """

    def __init__(
        self,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        return_trace: bool = False,
        zero_output_for_mask: bool = False,
        engine: str = "auto",
        time_buckets: Union[str, Sequence[int], None] = "auto",
        **kwargs,
    ):
        engines.check_name(engine)
        time_buckets = check_buckets(time_buckets)
        super().__init__(**kwargs)
        self.return_sequences = check_bool("return_sequences", return_sequences)
        self.return_state = check_bool("return_state", return_state)
        self.go_backwards = check_bool("go_backwards", go_backwards)
        self.stateful = check_bool("stateful", stateful)
        self.unroll = check_bool("unroll", unroll)
        self.return_trace = check_bool("return_trace", return_trace)
        self.zero_output_for_mask = check_bool(
            "zero_output_for_mask", zero_output_for_mask
        )
        self.engine = engine
        self.time_buckets = time_buckets
        self.supports_masking = True
        object.__setattr__(self, "_state_variables", None)

    # Read-only views of the cell.
    state_size = property(lambda self: self.cell.state_size)
    state_names = property(lambda self: self.cell.state_names)
    output_size = property(lambda self: self.cell.output_size)
    feedback_weights = property(lambda self: self.cell.feedback_weights)
    feedforward_weights = property(lambda self: self.cell.feedforward_weights)

    # --- build and states -----------------------------------------------------

    def build(
        self,
        sequences_shape,
        initial_state_shape=None,
        memory_shape=None,
        memory_mask_shape=None,
    ):
        sequences_shape = tuple(sequences_shape)
        rank = self.cell.input_rank
        if len(sequences_shape) != rank:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank {rank} "
                f"{self.cell.input_layout}, got shape {sequences_shape}"
            )
        self._check_memory_shapes(memory_shape, memory_mask_shape)
        if memory_shape is not None:
            self.cell.memory_features = memory_shape[-1]
        self.cell.build(sequences_shape)
        self.input_spec = keras.InputSpec(
            ndim=rank,
            axes={i - rank: d for i, d in enumerate(sequences_shape) if i > 1},
        )
        if self.stateful:
            batch = sequences_shape[0]
            if batch is None:
                raise ValueError(
                    f"A stateful {type(self).__name__} layer needs a fixed batch "
                    "size: pass `batch_shape=(batch, time, ...)` to `keras.Input` "
                    f"(or `batch_size` to the input), got input shape "
                    f"{sequences_shape}"
                )
            # Not tracked as weights (as in Keras's RNN): the states are not
            # part of the model's parameters, get_weights or checkpoints.
            variables = [
                keras.Variable(
                    tf.zeros((batch, size)),
                    trainable=False,
                    dtype=self.variable_dtype,
                    name=f"state_{i}",
                )
                for i, size in enumerate(self.cell.engine_state_sizes)
            ]
            object.__setattr__(self, "_state_variables", variables)

    @property
    def states(self):
        """The state variables of a stateful layer (None otherwise), in the
        engine's layout: ``(batch, size)`` each (maps flattened)."""
        return self._state_variables

    def state_values(self):
        """A stateful layer's current states as numpy arrays (engine layout),
        or None when it is not stateful or they are all zero."""
        if self._state_variables is None:
            return None
        with tf.init_scope():  # read the values, also while tracing
            values = [np.array(v.numpy()) for v in self._state_variables]
        if not any(np.any(value) for value in values):
            return None
        return values

    def _zero_states(self, batch):
        """Zero states in the engine's layout, compute dtype."""
        return [
            tf.zeros([batch, size], self.compute_dtype)
            for size in self.cell.engine_state_sizes
        ]

    def snapshot_states(self, batch):
        """The states a pure call starts from (``engine.pure_calls``): zeros, or the
        stateful layer's current values as constants, for its own batch
        size, or any when it is 1 (the row repeated)."""
        values = self.state_values()
        if values is None:
            return self._zero_states(batch)
        return [snapshot_for_batch(self, value, batch) for value in values]

    @property
    def step_output_shape(self):
        """The shape of one step's output, without the batch."""
        return self.cell.output_shape(None, (), self.cell.spec.output_size)

    def get_initial_state(self, batch_size: Union[int, tf.Tensor]) -> List[tf.Tensor]:
        """Zero states for ``batch_size`` rows, in the order of
        ``state_names``, each of the shape ``step`` takes."""
        return [
            tf.zeros([batch_size, *shape], self.compute_dtype)
            for shape in self.cell.state_shapes
        ]

    def reset_state(
        self,
        states: Union[None, Sequence[TensorLike], Mapping[str, TensorLike]] = None,
    ) -> None:
        """Zeroes the states of a stateful layer, or sets them to ``states``."""
        if not self.stateful:
            raise ValueError("reset_state() needs a layer built with stateful=True")
        if self._state_variables is None:
            raise ValueError("reset_state() needs a built layer: call it once first")
        if states is None:
            for variable in self._state_variables:
                variable.assign(tf.zeros_like(variable))
            return
        batch = self._state_variables[0].shape[0]
        checked = self._check_states(
            states, batch, "states", against="the layer's stored states"
        )
        for variable, value in zip(self._state_variables, checked):
            variable.assign(tf.cast(value, variable.dtype))

    reset_states = reset_state

    def _check_states(self, states, reference, argument, against="the inputs"):
        """``states`` (a list in ``state_names`` order, or a dict by those
        names) as engine-layout tensors of the compute dtype, each with one
        row per row of ``reference`` (the inputs, or a batch size)."""
        cell, names = self.cell, self.cell.state_names
        if isinstance(states, dict):
            if set(states) != set(names):
                raise ValueError(
                    f"Argument `{argument}` given as a dict must have exactly the "
                    f"keys {names} (the state names, in any order), got "
                    f"{sorted(states)}"
                )
            states = [states[name] for name in names]
        elif tf.is_tensor(states) or hasattr(states, "shape"):
            states = [states]
        states = list(states)
        if len(states) != len(names):
            raise ValueError(
                f"Argument `{argument}` must hold {len(names)} tensors of sizes "
                f"{cell.state_size} ({', '.join(names)}), got {len(states)}"
            )
        batch = reference if isinstance(reference, int) else reference.shape[0]
        checked = []
        for i, (state, shape) in enumerate(zip(states, cell.state_shapes)):
            state = tf.convert_to_tensor(state)
            known = state.shape
            if known.rank != len(shape) + 1 or tuple(known[1:]) != tuple(shape):
                raise ValueError(
                    f"Argument `{argument}`[{i}] ({names[i]}) must have shape "
                    f"{(batch, *shape)}, got {tuple(known)}"
                )
            what = f"Argument `{argument}`[{i}] ({names[i]})"
            state = batch_checked(
                what,
                state,
                reference,
                check=not engines.pure(),
                words=batch_words(what, against),
            )
            checked.append(cell.to_engine(tf.cast(state, self.compute_dtype)))
        return checked

    def check_mask(
        self, mask: TensorLike, sequences: TensorLike
    ) -> Optional[tf.Tensor]:
        """``mask`` (None passes) as a ``(batch, time)`` boolean tensor that
        fits ``sequences``, or a ``ValueError`` that says what it got."""
        if mask is None:
            return None
        mask = tf.convert_to_tensor(mask)
        axes = ("mask", "batch, time", "inputs")
        check_mask_shape(*axes, mask.shape, sequences.shape)
        if not engines.pure():
            mask = asserted_mask_shape(*axes, mask, sequences)
        return tf.cast(mask, tf.bool)

    def _stored_states(self, sequences):
        """A stateful layer's states, checked to fit the batch of
        ``sequences`` (the one it was built for)."""
        fixed = self._state_variables[0].shape[0]
        words = (
            f"A stateful {type(self).__name__} layer ({self.name!r}) was built for "
            "batch size {rows} and got inputs with batch size {batch}: feed "
            f"batches of {fixed} (in predict, evaluate and fit, a number of rows "
            f"that is a multiple of {fixed}: drop or pad the last rows), or build "
            "a new layer (or model) with `batch_shape=({batch}, ...)` and copy "
            "the weights with `set_weights`"
        )
        return [
            batch_checked(
                "stored states",
                tf.cast(v.value, self.compute_dtype),
                sequences,
                words=words,
            )
            for v in self._state_variables
        ]

    def _start_states(self, initial_state, sequences):
        """The states a call starts from, engine layout, compute dtype."""
        batch = tf.shape(sequences)[0]
        if self.stateful:
            if initial_state is not None:
                raise ValueError(
                    "A stateful layer takes its initial state from its state "
                    "variables: use reset_state(states) instead of `initial_state`"
                )
            if engines.pure():
                return self.snapshot_states(batch)
            return self._stored_states(sequences)
        if initial_state is None:
            return self._zero_states(batch)
        return self._check_states(initial_state, sequences, "initial_state")

    def start_states(self, sequences: TensorLike) -> List[tf.Tensor]:
        """The states a call on ``sequences`` without ``initial_state``
        starts from, each of the shape ``step`` takes: zeros, or a stateful
        layer's stored states (their snapshot in ``engine.pure_calls``)."""
        sequences = self._cast_inputs(sequences)
        return self.cell.states_from_engine(self._start_states(None, sequences))

    def _cast_inputs(self, inputs):
        """Inputs in the compute dtype: ints and bools are cast, as Keras's
        recurrent layers do; floats of another precision too."""
        inputs = tf.convert_to_tensor(inputs)
        if inputs.dtype != self.compute_dtype:
            inputs = tf.cast(inputs, self.compute_dtype)
        return inputs

    # --- call -----------------------------------------------------------------

    def call(
        self,
        sequences,
        initial_state=None,
        mask=None,
        training=False,
        memory=None,
        memory_mask=None,
    ):
        if getattr(self, "use_cudnn", None) is True:  # Keras's GRU/LSTM argument
            raise ValueError(
                "use_cudnn=True was specified, but cuDNN is not supported for "
                "this layer configuration with this backend (feedback layers run "
                "their own engines, never cuDNN). Pass use_cudnn='auto' to "
                "fallback to a non-cuDNN implementation."
            )
        cell = self.cell
        sequences = self._cast_inputs(sequences)
        mask = self.check_mask(mask, sequences)
        if mask is not None and not engines.pure():
            sequences = _masking.zero_masked(sequences, mask)
        states = self._start_states(initial_state, sequences)
        batch = tf.shape(sequences)[0]
        params, per_example = cell.engine_params(training, batch)
        params = self._memory_params(
            params, memory, memory_mask, sequences, not engines.pure()
        )
        if "memory" in params and per_example is not None:
            per_example = (*per_example, "memory")
        inputs = cell.engine_inputs(params, cell.input_dropout(sequences, training))
        recurrence = cell.recurrence()
        if sequences.shape[1] == 0:
            outputs, last_output, final_states, traces = _empty(
                recurrence, inputs, states, self.return_trace
            )
        else:
            outputs, last_output, final_states, traces = engines.run(
                # A core the fused engine may not run (a wrapped Keras cell).
                self.engine if cell.fused else "reference",
                recurrence,
                params,
                inputs,
                states,
                mask=mask,
                go_backwards=self.go_backwards,
                return_sequences=self.return_sequences,
                zero_output_for_mask=self.zero_output_for_mask,
                unroll=self.unroll,
                return_trace=self.return_trace,
                per_example=per_example,
                time_buckets=self.time_buckets,
                step_work=cell.step_work(),
            )
        if self.stateful and not engines.pure():
            for variable, value in zip(self._state_variables, final_states):
                variable.assign(tf.cast(value, variable.dtype))
        if self.return_trace and "memory" in params:
            traces = {
                **traces,
                "memory_alignment": self._alignment(params, traces, mask),
            }
        return self._results(outputs, last_output, final_states, traces)

    def _results(self, outputs, last_output, final_states, traces):
        cell, spec = self.cell, self.cell.spec
        if self.return_sequences:
            result = [cell.from_engine(outputs, spec.output_size)]
        else:
            result = [cell.from_engine(last_output, spec.output_size)]
        if self.return_state:
            result.extend(cell.states_from_engine(final_states))
        if self.return_trace:
            sizes = spec.trace_sizes
            result.append(
                {
                    k: v if k not in sizes else cell.from_engine(v, sizes[k])
                    for k, v in traces.items()
                }
            )
        return result[0] if len(result) == 1 else tuple(result)

    def step(
        self,
        inputs: TensorLike,
        states: Union[Sequence[TensorLike], Mapping[str, TensorLike]],
        mask: Optional[TensorLike] = None,
        training: bool = False,
        previous_output: Optional[TensorLike] = None,
        memory: Optional[TensorLike] = None,
        memory_mask: Optional[TensorLike] = None,
    ) -> Tuple[tf.Tensor, List[tf.Tensor]]:
        """One time step, with explicit states: the way to stream in Python.

        Running ``step`` over the steps of a sequence, feeding each call the
        states the previous one returned (starting from
        ``get_initial_state(batch)``), gives the outputs and final states of
        the whole-sequence call (in processing order: with
        ``go_backwards=True`` feed the steps last first). The layer's
        variables are not read or written: a stateful layer's states are
        whatever the caller passes.

        Args:
            inputs: one step's inputs, ``(batch, ...)``: the inputs of the
                whole-sequence call without the time axis.
            states: the states entering the step: a list in the order of
                ``state_names`` (``h``, ``carry`` for lstm, ``c`` with
                feedback), or a dict by those names.
            mask: optional ``(batch,)`` boolean; a masked row keeps its states
                and repeats its previous output (zeros with
                ``zero_output_for_mask``), as over a sequence.
            training: whether dropout is active (masks drawn per call).
            previous_output: optional, the output of the previous step, which
                masked rows repeat; by default the output that their (kept)
                states give, which is the previous step's output whenever
                there was an unmasked one (before any, the whole-sequence call
                outputs zeros: pass zeros to match it).
            memory: with memory attention, the memory ``(batch,
                memory_time, features)`` the step attends over.
            memory_mask: optional ``(batch, memory_time)`` boolean, False at
                padded memory positions.

        Returns:
            ``(outputs, new_states)``: the step's output and the list of new
            states, each of the shape ``get_initial_state`` gives.

        Example:

        >>> import numpy as np
        >>> import keras_feedback
        >>> layer = keras_feedback.layers.Feedback(4, return_sequences=True)
        >>> x = np.random.default_rng(0).normal(size=(2, 3, 5)).astype("float32")
        >>> states = layer.get_initial_state(2)
        >>> steps = []
        >>> for t in range(3):
        ...     y, states = layer.step(x[:, t], states)
        ...     steps.append(y)
        >>> bool(np.allclose(np.stack(steps, 1), layer(x), atol=1e-5))
        True
        """
        cell = self.cell
        inputs = self._cast_inputs(inputs)
        sequences = inputs[:, None]
        if not self.built:
            self.build(sequences.shape)
        rank = self.cell.input_rank - 1
        if inputs.shape.rank != rank:
            raise ValueError(
                f"Argument `inputs` of {type(self).__name__}.step must have rank "
                f"{rank} (one step of {self.cell.input_layout}), got shape "
                f"{tuple(inputs.shape)}"
            )
        expected = self.cell.step_shape
        if not all(
            a is None or b is None or a == b for a, b in zip(inputs.shape[1:], expected)
        ):
            raise ValueError(
                f"Argument `inputs` of {type(self).__name__}.step must have shape "
                f"(batch, {', '.join(map(str, expected))}), got "
                f"{tuple(inputs.shape)}"
            )
        old = self._check_states(states, inputs, "states")
        if mask is not None:
            mask = tf.convert_to_tensor(mask)
            if mask.shape.rank != 1:
                raise ValueError(
                    f"Argument `mask` of step must have shape (batch,) = "
                    f"({inputs.shape[0]},), got {tuple(mask.shape)}"
                )
            mask = batch_checked(
                "Argument `mask`", tf.cast(mask, tf.bool), inputs, not engines.pure()
            )
            if not engines.pure():
                sequences = _masking.zero_masked(inputs, mask)[:, None]
        batch = tf.shape(inputs)[0]
        params, _ = cell.engine_params(training, batch)
        params = self._memory_params(
            params, memory, memory_mask, inputs, not engines.pure()
        )
        recurrence = cell.recurrence()
        projected = cell.engine_inputs(params, cell.input_dropout(sequences, training))
        if recurrence.project is not None:
            projected = recurrence.project(params, projected)
        output, new, _ = recurrence.step(params, projected[:, 0], old)
        new = list(new)
        if mask is not None:
            keep = tf.reshape(mask, [-1, 1])
            new = _masking.keep(keep, new, old)
            if previous_output is None:
                previous = cell.readout(params, old)
            else:
                previous = cell.to_engine(self._cast_inputs(previous_output))
            output = _masking.output(keep, output, previous, self.zero_output_for_mask)
        spec = cell.spec
        return (
            cell.from_engine(output, spec.output_size),
            cell.states_from_engine(new),
        )

    # --- shapes, masks, config ------------------------------------------------

    def compute_output_shape(
        self,
        sequences_shape,
        initial_state_shape=None,
        memory_shape=None,
        memory_mask_shape=None,
    ):
        cell, spec = self.cell, self.cell.spec
        batch, time = sequences_shape[0], sequences_shape[1]
        lead = (batch, time) if self.return_sequences else (batch,)
        shapes = [cell.output_shape(sequences_shape, lead, spec.output_size)]
        if self.return_state:
            shapes.extend(
                cell.output_shape(sequences_shape, (batch,), n) for n in spec.state_size
            )
        if self.return_trace:
            traces = {
                k: cell.output_shape(sequences_shape, (batch, time), n)
                for k, n in spec.trace_sizes.items()
            }
            if memory_shape is not None:
                traces["memory_alignment"] = (batch, time, tuple(memory_shape)[1])
            shapes.append(traces)
        return shapes[0] if len(shapes) == 1 else tuple(shapes)

    def compute_mask(self, sequences, mask=None, memory=None, memory_mask=None):
        masks = [mask if self.return_sequences else None]
        if self.return_state:
            masks.extend(None for _ in self.cell.spec.state_size)
        if self.return_trace:
            names = list(self.cell.spec.trace_sizes)
            if getattr(self.cell, "memory_attention", None):
                names.append("memory_alignment")
            masks.append({k: None for k in names})
        return masks[0] if len(masks) == 1 else tuple(masks)

    def get_config(self):
        config = {
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
            "return_trace": self.return_trace,
            "zero_output_for_mask": self.zero_output_for_mask,
            "engine": self.engine,
            "time_buckets": self.time_buckets,
        }
        return {**super().get_config(), **self.cell.cell_config(), **config}


def _empty(recurrence, inputs, states, return_trace):
    """What a sequence of no steps gives: no outputs, zero last output, the
    initial states unchanged."""
    batch = tf.shape(inputs)[0]
    dtype = states[0].dtype

    def none(size):
        return tf.zeros([batch, 0, size], dtype)

    traces = {k: none(n) for k, n in recurrence.traces(return_trace).items()}
    last = tf.zeros([batch, recurrence.output_size], dtype)
    return none(recurrence.output_size), last, list(states), traces


def snapshot_for_batch(layer, value, batch):
    """One snapshot state ``(rows, size)`` for a batch of ``batch`` rows: as
    it is, or its single row repeated when the layer's batch size is 1."""
    rows, size = value.shape
    value = tf.constant(value, layer.compute_dtype)
    batch = tf.convert_to_tensor(batch)
    if rows != 1:
        check = tf.debugging.assert_equal(
            batch,
            tf.constant(rows, batch.dtype),
            message=(
                f"{type(layer).__name__} {layer.name!r} starts from the states "
                f"of its stateful batch of {rows} rows: the batch size must be "
                f"{rows}"
            ),
        )
        with tf.control_dependencies([check]):
            value = tf.identity(value)
    return tf.broadcast_to(value, tf.stack([batch, tf.constant(size, batch.dtype)]))
