"""``FeedbackLoop``: any block run for a few iterations on its own output.

Feedback for data that is not a sequence (images, feature vectors): the same
block, with the same weights, runs ``iterations`` times; from the second
iteration on its input also carries what it produced the iteration before.
"""

from typing import Any
from typing import Optional

import keras
import tensorflow as tf

from keras_feedback._api import public
from keras_feedback._checks import check_bool

FEEDBACK_MODES = ("concat", "add", "gate")


def nested_layers(layer):
    """``layer`` and every layer nested in it, each once.

    Descends into models (``layers``), Keras wrappers (``layer``,
    ``Bidirectional``'s two layers) and ``FeedbackLoop`` / ``Equilibrium``
    (``block``, ``projection``). Layers held by custom (subclassed) layers
    other than these are not visited.
    """
    seen = set()
    stack = [layer]
    while stack:
        current = stack.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BlockFeedback):
            stack.append(current.block)
            if current.projection is not None:
                stack.append(current.projection)
        elif isinstance(current, keras.Model):
            stack.extend(current.layers)
        elif isinstance(current, keras.layers.Bidirectional):
            stack.extend([current.forward_layer, current.backward_layer])
        elif isinstance(current, keras.layers.Wrapper):
            stack.append(current.layer)


def _shape(value):
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def _is_shape(value):
    return isinstance(value, (tuple, list)) and all(
        d is None or isinstance(d, int) for d in value
    )


def _single(structure, what, owner="FeedbackLoop"):
    flat = tf.nest.flatten(structure)
    if len(flat) != 1:
        raise ValueError(
            f"{owner} feeds back a single tensor, but {what} has "
            f"{len(flat)} outputs; pass `feedback_from` the name of the layer "
            "whose output to feed back"
        )
    return flat[0]


def check_block_arguments(block, feedback, feedback_from, projection):
    """Raises unless the arguments every ``BlockFeedback`` takes are valid."""
    if not isinstance(block, keras.layers.Layer):
        raise TypeError(
            "Argument `block` must be a Keras layer or model, got "
            f"{type(block).__name__}: {block!r}"
        )
    if feedback not in FEEDBACK_MODES:
        raise ValueError(
            f"Argument `feedback` must be one of {FEEDBACK_MODES}, got {feedback!r}"
        )
    if projection is not None and not isinstance(projection, keras.layers.Layer):
        raise TypeError(
            "Argument `projection` must be a Keras layer or None, got "
            f"{type(projection).__name__}: {projection!r}"
        )
    if feedback_from is not None:
        if not isinstance(feedback_from, str):
            raise TypeError(
                "Argument `feedback_from` must be a layer name (str) or None, "
                f"got {feedback_from!r}"
            )
        names = [layer.name for layer in getattr(block, "layers", [])]
        if not isinstance(block, keras.Model) or feedback_from not in names:
            raise ValueError(
                f"Argument `feedback_from`={feedback_from!r} must name a layer "
                f"of `block` (a functional or Sequential model), got block "
                f"{block.name!r} ({type(block).__name__}) with layers {names}"
            )


class BlockFeedback(keras.layers.Layer):
    """The plumbing of a layer that feeds a block's output back to its input.

    Shared by ``FeedbackLoop`` (a fixed number of iterations) and
    ``Equilibrium`` (iterations to a fixed point): the arguments ``block``,
    ``feedback``, ``feedback_from`` and ``projection`` (see
    ``FeedbackLoop``), the shape checks and building of the block, the gate
    weights, the block call (``_run_block``: its output and the signal fed
    back), the combination of the input with that signal (``_combine``),
    the feedback / feedforward split of the weights, and the config.
    """

    def __init__(
        self,
        block,
        feedback="concat",
        feedback_from=None,
        projection=None,
        **kwargs,
    ):
        check_block_arguments(block, feedback, feedback_from, projection)
        super().__init__(**kwargs)
        self.block = block
        self.feedback = feedback
        self.feedback_from = feedback_from
        self.projection = projection
        # The block with the fed-back layer's output as a second output;
        # its layers are the block's, so it is not tracked a second time.
        object.__setattr__(self, "_tapped", None)
        self._fed_shape = None

    # --- building and shape checks ---------------------------------------------

    def _single(self, structure, what):
        return _single(structure, what, type(self).__name__)

    def _block_input_shape(self):
        inputs = getattr(self.block, "inputs", None) if self.block.built else None
        if isinstance(self.block, keras.Model) and inputs:
            return _shape(self._single(inputs, f"block {self.block.name!r}"))
        return None

    def _where(self):
        if self.feedback_from is not None:
            return (
                f"the output of layer {self.feedback_from!r} of block "
                f"{self.block.name!r}"
            )
        return f"the output of block {self.block.name!r}"

    def _raw_fed_shape(self, block_input_shape):
        """Shape of the block's output (or its tapped layer's) for that input."""
        if self.feedback_from is not None:
            if not self.block.built:
                self.block.build(block_input_shape)
            tapped = keras.Model(
                self._single(self.block.inputs, f"block {self.block.name!r}"),
                [
                    self._single(self.block.outputs, f"block {self.block.name!r}"),
                    self.block.get_layer(self.feedback_from).output,
                ],
            )
            object.__setattr__(self, "_tapped", tapped)
            return _shape(tapped.outputs[1])
        try:
            shape = self.block.compute_output_shape(block_input_shape)
        except NotImplementedError:
            if not self.block.built:
                self.block.build(block_input_shape)
            spec = self.block.compute_output_spec(keras.KerasTensor(block_input_shape))
            shape = tf.nest.map_structure(lambda s: tuple(s.shape), spec)
        if not _is_shape(shape):
            raise ValueError(
                f"{type(self).__name__} feeds back a single tensor, but block "
                f"{self.block.name!r} has several outputs {shape}; pass "
                "`feedback_from` the name of the layer whose output to feed back"
            )
        return tuple(shape)

    def _projected(self, shape):
        if self.projection is None:
            return shape
        if not self.projection.built:
            self.projection.build(shape)
        return tuple(self.projection.compute_output_shape(shape))

    def _mismatch(self, x_shape, fed_shape, rule):
        return ValueError(
            f"{type(self).__name__}(feedback={self.feedback!r}) cannot feed back "
            f"{self._where()}: {rule}; got input shape {x_shape} and fed-back "
            f"shape {fed_shape}"
            + (
                ""
                if self.projection is not None
                else ". Pass `projection`, a "
                "layer that maps the fed-back signal to a shape that fits"
            )
        )

    def build(self, input_shape):
        x_shape = tuple(input_shape)
        if len(x_shape) < 2 or x_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} expects inputs (batch, ..., channels) "
                f"with a known last axis, got shape {x_shape}"
            )
        declared = self._block_input_shape()
        if self.feedback == "concat":
            if declared is not None:
                block_input = declared
                channels = declared[-1] - x_shape[-1]
            else:
                # A layer whose output does not depend on its input channels
                # (Conv2D, Dense, ...): ask it with the channels unknown.
                try:
                    probe = self._projected(self._raw_fed_shape(x_shape[:-1] + (None,)))
                except Exception as error:
                    raise ValueError(
                        f"{type(self).__name__}(feedback='concat') needs to know the "
                        "channels fed back before building the block: pass a "
                        "block built from keras.Input (its input has input + "
                        "fed-back channels), got block "
                        f"{self.block.name!r} ({type(self.block).__name__}) "
                        f"that could not tell its output shape: {error}"
                    ) from None
                channels = probe[-1]
                block_input = x_shape[:-1] + (x_shape[-1] + channels,)
            fed_shape = self._projected(self._raw_fed_shape(block_input))
            if (
                len(fed_shape) != len(x_shape)
                or fed_shape[1:-1] != x_shape[1:-1]
                or fed_shape[-1] != channels
            ):
                raise self._mismatch(
                    x_shape,
                    fed_shape,
                    "with 'concat' the fed-back signal must match the input on "
                    "every axis but the last, and have as many channels as the "
                    f"block's input {block_input} has beyond the input's "
                    f"{x_shape[-1]}",
                )
        else:
            block_input = x_shape
            if declared is not None and declared[1:] != x_shape[1:]:
                raise ValueError(
                    f"{type(self).__name__}(feedback={self.feedback!r}) calls the "
                    f"block on inputs of the input's shape {x_shape}, but block "
                    f"{self.block.name!r} takes {declared}"
                )
            fed_shape = self._projected(self._raw_fed_shape(block_input))
            if tuple(fed_shape[1:]) != tuple(x_shape[1:]):
                raise self._mismatch(
                    x_shape,
                    fed_shape,
                    f"with {self.feedback!r} the fed-back signal must have the "
                    "input's shape",
                )
        if not self.block.built:
            self.block.build(block_input)
        if self.feedback == "gate":
            channels = x_shape[-1]
            self.gate_kernel = self.add_weight(
                name="gate_kernel",
                shape=(2 * channels, channels),
                initializer="glorot_uniform",
            )
            self.gate_bias = self.add_weight(
                name="gate_bias", shape=(channels,), initializer="zeros"
            )
        self._fed_shape = tuple(fed_shape)

    # --- the block call ---------------------------------------------------------

    def _run_block(self, inputs, training):
        if self._tapped is not None:
            output, fed = self._tapped(inputs, training=training)
        else:
            output = self.block(inputs, training=training)
            fed = self._single(output, f"block {self.block.name!r}")
        if self.projection is not None:
            fed = self.projection(fed, training=training)
        return output, fed

    def _combine(self, x, fed):
        if fed is None:  # nothing fed back yet
            if self.feedback == "concat":
                shape = tf.concat([tf.shape(x)[:-1], [self._fed_shape[-1]]], 0)
                return tf.concat([x, tf.zeros(shape, x.dtype)], axis=-1)
            return x
        fed = tf.cast(fed, x.dtype)
        if self.feedback == "concat":
            return tf.concat([x, fed], axis=-1)
        if self.feedback == "add":
            return x + fed
        both = tf.concat([x, fed], axis=-1)
        kernel = tf.cast(self.gate_kernel, x.dtype)
        gate = tf.sigmoid(
            tf.tensordot(both, kernel, axes=[[-1], [0]])
            + tf.cast(self.gate_bias, x.dtype)
        )
        return x + gate * fed

    def _block_spec(self, x_shape):
        """The spec of the block's own output when the input has ``x_shape``."""
        if self._fed_shape is None:
            self.build(x_shape)
        if self.feedback == "concat":
            block_input = x_shape[:-1] + (x_shape[-1] + self._fed_shape[-1],)
        else:
            block_input = x_shape
        model = self._tapped if self._tapped is not None else self.block
        # The block's own spec: its output dtype is the layer's (a block may
        # compute in another dtype than the layer, e.g. a float32 head under
        # mixed precision).
        spec = model.compute_output_spec(
            keras.KerasTensor(block_input, dtype=self.compute_dtype)
        )
        return spec[0] if self._tapped is not None else spec

    def compute_output_shape(self, input_shape):
        spec = self.compute_output_spec(keras.KerasTensor(input_shape))
        return tf.nest.map_structure(lambda s: tuple(s.shape), spec)

    # --- staged training ---------------------------------------------------------

    @property
    def feedback_weights(self):
        """Weights that exist for the feedback: the gate, the projection, and
        the feedback weights of feedback layers inside the block."""
        found = []
        if self.feedback == "gate" and self.built:
            found += [self.gate_kernel, self.gate_bias]
        if self.projection is not None:
            found += list(self.projection.weights)
        for layer in nested_layers(self.block):
            found += list(getattr(layer, "feedback_weights", []))
        unique = {}
        for variable in found:
            unique.setdefault(id(variable), variable)
        return list(unique.values())

    @property
    def feedforward_weights(self):
        """Every weight that is not in ``feedback_weights`` (the block's)."""
        feedback = {id(v) for v in self.feedback_weights}
        return [v for v in self.weights if id(v) not in feedback]

    # --- serialization -------------------------------------------------------------

    def get_config(self):
        config = {
            "block": keras.saving.serialize_keras_object(self.block),
            "feedback": self.feedback,
            "feedback_from": self.feedback_from,
            "projection": (
                None
                if self.projection is None
                else keras.saving.serialize_keras_object(self.projection)
            ),
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["block"] = keras.saving.deserialize_keras_object(
            config["block"], custom_objects=custom_objects
        )
        if config.get("projection") is not None:
            config["projection"] = keras.saving.deserialize_keras_object(
                config["projection"], custom_objects=custom_objects
            )
        return cls(**config)


@public("keras_feedback.layers.FeedbackLoop")
class FeedbackLoop(BlockFeedback):
    """Runs a block for several iterations, feeding its output back to its input.

    Iterative feedback (Zamir et al., 2017) for inputs that are not
    sequences: ``block`` (any Keras layer or model) runs ``iterations``
    times with shared weights. Iteration ``k`` reads the input ``x`` combined
    with the fed-back signal ``f_{k-1}`` (the block's output at iteration
    ``k-1``, or the output of its layer ``feedback_from``, passed through
    ``projection`` when given); ``f_0 = 0``, so the first iteration is the
    plain feedforward pass. Every iteration gives a prediction: the layer
    returns the last, or all of them stacked (``return_iterations``), to be
    supervised with ``keras_feedback.training.IterationLoss``.

    The combination ``feedback``:

    - ``"concat"``: the block reads ``[x; f]`` along the last (channels)
      axis, so its input has ``C + F`` channels; ``f`` must match ``x`` on
      every other axis. The first iteration reads ``[x; 0]``.
    - ``"add"``: the block reads ``x + f``; ``f`` must have ``x``'s shape.
    - ``"gate"``: the block reads ``x + g ⊙ f`` with a learned gate
      ``g = sigmoid([x; f] W_g + b_g)`` (per position, over channels);
      ``f`` must have ``x``'s shape.

    With ``"add"`` or ``"gate"`` and ``iterations=1`` the layer is exactly
    the block. The loop is a Python loop over the (static) iterations:
    ``model.compile(jit_compile=True)`` compiles it with XLA, and it exports
    to SavedModel and LiteRT as the block does.

    Args:
        block: a Keras layer or model, called once per iteration.
        iterations: positive int, how many times the block runs.
        feedback: ``"concat"``, ``"add"`` or ``"gate"``.
        return_iterations: bool, return every iteration's output stacked on
            axis 1, ``(batch, iterations, ...)``, instead of the last one.
        feedback_from: optional name of a layer of ``block`` (a functional
            or Sequential model) whose output is fed back instead of the
            block's output (e.g. the feature maps before a classifier head).
        projection: optional Keras layer applied to the fed-back signal
            before it is combined with the input; needed when its shape does
            not fit (e.g. ``keras.layers.Conv2D(channels, 1)``).
        **kwargs: base Layer arguments.

    Call arguments:
        inputs: a tensor, ``(batch, ...)``.
        training: bool, passed to the block.

    Returns:
        The block's output at the last iteration, or with
        ``return_iterations`` every iteration's, ``(batch, iterations, ...)``.

    Attributes:
        feedback_enabled: bool, default True. False feeds nothing back (every
            iteration then computes the first iteration's output): the loop
            disabled, e.g. to train the feedforward part first. Like a
            layer's ``trainable``, changing it takes effect when the model is
            compiled again.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_feedback
    >>> block = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    >>> loop = keras_feedback.layers.FeedbackLoop(
    ...     block, iterations=3, feedback="concat", return_iterations=True)
    >>> loop(np.zeros((2, 8, 8, 1), "float32")).shape
    TensorShape([2, 3, 8, 8, 4])

    Reference:
        Zamir et al., "Feedback Networks", CVPR 2017.
    """

    def __init__(
        self,
        block: keras.layers.Layer,
        iterations: int,
        feedback: str = "concat",
        return_iterations: bool = False,
        feedback_from: Optional[str] = None,
        projection: Optional[keras.layers.Layer] = None,
        **kwargs: Any,
    ) -> None:
        if (
            isinstance(iterations, bool)
            or not isinstance(iterations, int)
            or iterations < 1
        ):
            raise ValueError(
                f"Argument `iterations` must be a positive integer, got {iterations!r}"
            )
        super().__init__(
            block,
            feedback=feedback,
            feedback_from=feedback_from,
            projection=projection,
            **kwargs,
        )
        self.iterations = iterations
        self.return_iterations = check_bool("return_iterations", return_iterations)
        self.feedback_enabled = True

    # --- the loop ------------------------------------------------------------------

    def call(self, inputs, training=None):
        x = tf.cast(tf.convert_to_tensor(inputs), self.compute_dtype)
        outputs = []
        fed = None
        for _ in range(self.iterations):
            output, new_fed = self._run_block(self._combine(x, fed), training)
            outputs.append(output)
            if not self.feedback_enabled:
                # Every iteration would compute the first one again.
                outputs = outputs * self.iterations
                break
            fed = new_fed
        if not self.return_iterations:
            return outputs[-1]
        return tf.nest.map_structure(lambda *o: tf.stack(o, axis=1), *outputs)

    def compute_output_spec(self, inputs, training=None):
        spec = self._block_spec(tuple(inputs.shape))
        if not self.return_iterations:
            return spec
        return tf.nest.map_structure(
            lambda s: keras.KerasTensor(
                s.shape[:1] + (self.iterations,) + s.shape[1:], dtype=s.dtype
            ),
            spec,
        )

    def get_config(self):
        config = {
            "iterations": self.iterations,
            "return_iterations": self.return_iterations,
        }
        return {**super().get_config(), **config}
