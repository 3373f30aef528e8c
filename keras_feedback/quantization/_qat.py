"""Quantization-aware training: a model's QAT copy, its ranges, and back.

``quantize_model`` returns a copy of a trained model whose ``Feedback``
layers compute with the rounding of LiteRT's int8 kernels
(``Feedback(quantization="int8")``) and whose ``Dense`` layers are
``QATDense``, with the same weights and the ranges of every quantised tensor
observed on data. Fine-tune it (``fit``; ``UpdateRanges`` moves the ranges
with what the model computes as it trains), then ``export_litert(model,
path, quantization="int8")`` converts it with those ranges, no calibration;
``strip`` gives the float model with the fine-tuned weights.
"""

import weakref
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_feedback._api import public
from keras_feedback.cells import _fake_quant
from keras_feedback.layers._cell import check_int
from keras_feedback.layers._feedback import Feedback
from keras_feedback.layers._qat_support import ACTIVATIONS
from keras_feedback.layers._qat_support import RANGES
from keras_feedback.layers._qat_support import activation_name
from keras_feedback.layers._recurrent import FeedbackRNN


@public("keras_feedback.quantization.QATDense")
class QATDense(keras.layers.Dense):
    """``keras.layers.Dense`` computing as LiteRT's int8 ``FULLY_CONNECTED``
    does: its input, kernel (symmetric, one scale) and output on their
    8-bit grids, the output after the bias and a ReLU (a sigmoid or tanh
    then on its fixed grid). ``quantize_model`` makes it from a ``Dense``;
    the ranges of its input and output are the weight
    ``quantization_ranges`` ``(2, 2)``. Activations: linear, relu, sigmoid,
    tanh."""

    def build(self, input_shape):
        name = activation_name(self.activation)
        if name not in ACTIVATIONS:
            raise ValueError(
                f"Layer {self.name!r}: QATDense takes the activations "
                f"{ACTIVATIONS}, got {name or self.activation!r}"
            )
        super().build(input_shape)
        self.quantization_ranges = self.add_weight(
            name=RANGES,
            shape=(2, 2),
            initializer=lambda shape, dtype=None: tf.constant(
                [[-1.0, 1.0], [-1.0, 1.0]], dtype or "float32"
            ),
            trainable=False,
        )

    # Dense saves and loads its kernel and bias only (its own quantization
    # modes); the Layer's own methods take every variable, the ranges too.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def call(self, inputs, training=None):
        ranges = self.quantization_ranges
        x = _fake_quant.point(tf.cast(inputs, self.compute_dtype), ranges, 0)
        kernel = tf.convert_to_tensor(self.kernel)
        y = keras.ops.matmul(x, _fake_quant.weight(kernel, force=True))
        if self.use_bias:
            y = y + self.bias
        name = activation_name(self.activation)
        if name == "relu":
            y = tf.nn.relu(y)
        y = _fake_quant.point(y, ranges, 1)
        if name in ("sigmoid", "tanh"):
            y = _fake_quant.fixed(self.activation(y), name)
        return y


def _quantized_layers(model):
    """The model's layers with quantisation ranges, in the model's order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, QATDense):
            found.append(layer)
        elif isinstance(layer, FeedbackRNN) and getattr(
            layer.cell, "quantization", None
        ):
            found.append(layer)
    return found


@public("keras_feedback.quantization.is_quantized")
def is_quantized(model: keras.Model) -> bool:
    """Whether ``model`` has a layer in quantization-aware mode (its int8
    LiteRT export then takes the ranges from training)."""
    return bool(_quantized_layers(model))


def _check_model(model, argument="model"):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `{argument}` must be a keras.Model, got {type(model).__name__}"
        )
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"Argument `{argument}`: model {model.name!r} has no inputs yet; "
            "build a functional or Sequential model on keras.Input first"
        )


def _to_qat(layer):
    config = layer.get_config()
    if type(layer) is Feedback:
        return Feedback.from_config({**config, "quantization": "int8"})
    if type(layer) is keras.layers.Dense:
        return QATDense.from_config(config)
    if layer.weights:
        raise ValueError(
            f"Argument `model`: layer {layer.name!r} ({type(layer).__name__}) "
            "has no quantization-aware form; quantize_model takes Feedback "
            "and Dense layers and layers without weights (their outputs stay "
            "float in the LiteRT file unless a quantised layer reads them)"
        )
    return layer.__class__.from_config(config)


def _check_float(model):
    quantized = [layer.name for layer in _quantized_layers(model)]
    if quantized:
        raise ValueError(
            f"Argument `model`: {model.name!r} is quantization-aware already "
            f"(layers {quantized}); fine-tune it as it is, or quantize "
            "strip(model) again (that observes its ranges anew)"
        )


def check_layers(model):
    """Raises the ``ValueError`` ``quantize_model`` would raise for
    ``model``'s layers, without copying it."""
    _check_model(model)
    _check_float(model)
    for layer in model.layers:
        if type(layer) is Feedback:
            Feedback.from_config({**layer.get_config(), "quantization": "int8"})
        elif type(layer) is not keras.layers.Dense:
            _to_qat(layer)


def _to_float(layer):
    config = layer.get_config()
    if isinstance(layer, QATDense):
        return keras.layers.Dense.from_config(config)
    if isinstance(layer, FeedbackRNN) and "quantization" in config:
        config.pop("quantization")
    return layer.__class__.from_config(config)


def _clone(model, clone_function):
    clone = keras.models.clone_model(model, clone_function=clone_function)
    for old, new in zip(model.layers, clone.layers):
        targets = {v.path.split("/", 1)[-1]: v for v in new.weights}
        for variable in old.weights:
            key = variable.path.split("/", 1)[-1]
            if key in targets:
                targets[key].assign(variable)
    return clone


def _batches(data):
    """``data`` as a list of model inputs (an array, a list or dict of
    arrays, or a callable returning an iterable of those)."""
    batches = list(data()) if callable(data) else [data]
    if not batches:
        raise ValueError("Argument `representative_data` holds no data")
    return batches


def _points(layer):
    if isinstance(layer, QATDense):
        return 2
    return layer.cell.spec.quantization.points


def _rows(layer):
    if isinstance(layer, QATDense):
        return [0, 1]
    return layer.cell.spec.quantization.observed_rows()


def _ranges_variable(layer):
    if isinstance(layer, QATDense):
        return layer.quantization_ranges
    return layer.cell.quantization_ranges


def _observe_dense(layer, inputs, quantize):
    observer = _fake_quant.Observer(quantize)
    with _fake_quant.observing(observer):
        layer(inputs)
    return observer.vectors(2)


def _observe_recurrent(layer, inputs, quantize):
    """The ranges of the layer's points over the steps of ``inputs``, from
    zero states (the step run in a ``tf.while_loop``)."""
    cell = layer.cell
    points = cell.spec.quantization.points
    sequences = tf.cast(inputs, cell.compute_dtype)
    if layer.go_backwards:
        sequences = tf.reverse(sequences, [1])
    batch = tf.shape(sequences)[0]
    params, _ = cell.engine_params(False, batch)
    recurrence = cell.recurrence()
    observer = _fake_quant.Observer(quantize)
    with _fake_quant.observing(observer):
        projected = recurrence.project(params, cell.engine_inputs(params, sequences))
    low, high = observer.vectors(points)
    states = [tf.zeros((batch, size), sequences.dtype) for size in cell.spec.state_size]

    def body(t, states, low, high):
        observer = _fake_quant.Observer(quantize)
        with _fake_quant.observing(observer):
            _, new, _ = recurrence.step(params, projected[:, t], states)
        step_low, step_high = observer.vectors(points)
        return t + 1, list(new), tf.minimum(low, step_low), tf.maximum(high, step_high)

    _, _, low, high = tf.while_loop(
        lambda t, *_: t < tf.shape(projected)[1], body, (0, states, low, high)
    )
    return low, high


# Per layer, its observation traced once per mode (``quantize``): updates
# during training (``UpdateRanges``) reuse the trace. The traced function
# holds the layer weakly (a value must not keep its key alive).
_TRACED = weakref.WeakKeyDictionary()


def _observe(layer, inputs, quantize):
    """``(low, high)`` numpy ``(points,)`` of the layer on ``inputs``."""
    traced = _TRACED.setdefault(layer, {})
    if quantize not in traced:
        observe = _observe_dense if isinstance(layer, QATDense) else _observe_recurrent
        ref = weakref.ref(layer)

        def run(inputs):
            return observe(ref(), inputs, quantize)

        traced[quantize] = tf.function(run, autograph=False, reduce_retracing=True)
    low, high = traced[quantize](inputs)
    return low.numpy(), high.numpy()


def _observed(model, data, quantize):
    """Yields each quantised layer of ``model`` with the ``(low, high)`` it
    reaches on ``data``, in order (a layer's ranges may change before the
    next one is observed)."""
    batches = _batches(data)
    for layer in _quantized_layers(model):
        if len(layer._inbound_nodes) != 1:
            raise ValueError(
                f"Argument `model`: layer {layer.name!r} is called "
                f"{len(layer._inbound_nodes)} times; quantization-aware "
                "training takes layers called once"
            )
        inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]
        feed = keras.Model(inputs, layer.input)
        low = np.full(_points(layer), np.inf, np.float32)
        high = np.full(_points(layer), -np.inf, np.float32)
        for batch in batches:
            batch_low, batch_high = _observe(layer, feed(batch), quantize)
            low, high = np.minimum(low, batch_low), np.maximum(high, batch_high)
        yield layer, low, high


def _update(model, data, momentum, quantize):
    for layer, low, high in _observed(model, data, quantize):
        variable = _ranges_variable(layer)
        variable.assign(
            _fake_quant.merge(variable.numpy(), _rows(layer), low, high, momentum)
        )


@public("keras_feedback.quantization.quantize_model")
def quantize_model(model: keras.Model, representative_data: Any) -> keras.Model:
    """A copy of ``model`` for quantization-aware training.

    The copy's ``Feedback`` layers have ``quantization="int8"``, its
    ``Dense`` layers are ``QATDense``; its weights are ``model``'s, and the
    range of every quantised tensor is what the float model computes on
    ``representative_data`` (each layer in order, its inputs those of the
    quantised layers before it). Compile and fit it: it trains with the
    int8 rounding (straight-through gradients), on either engine. Then
    ``export_litert(copy, path, quantization="int8")``: the LiteRT file
    takes the ranges from the copy.

    Args:
        model: a built functional or Sequential model of ``Feedback``
            layers (built-in cores, activations tanh / sigmoid / relu /
            linear, no memory attention or layer norm), ``Dense`` layers
            (same activations) and layers without weights, each called
            once.
        representative_data: inputs like those the model will see: an array
            ``(batch, time, features)`` (a list or dict of arrays for several
            inputs), or a callable returning an iterable of such batches.

    Returns:
        The quantization-aware copy (not compiled).

    Raises:
        ValueError: a layer without a quantization-aware form, or a model
            that is quantization-aware already.

    Example:

    >>> import keras, numpy as np
    >>> from keras_feedback import layers, quantization
    >>> model = keras.Sequential([keras.Input((None, 2)),
    ...                           layers.Feedback(8), keras.layers.Dense(1)])
    >>> x = np.random.default_rng(0).normal(size=(4, 10, 2)).astype("float32")
    >>> qat = quantization.quantize_model(model, x)
    >>> quantization.is_quantized(qat), np.allclose(qat(x), model(x), atol=0.1)
    (True, True)
    """
    _check_model(model)
    _check_float(model)
    qat = _clone(model, _to_qat)
    _update(qat, representative_data, momentum=0.0, quantize=False)
    return qat


@public("keras_feedback.quantization.update_ranges")
def update_ranges(model: keras.Model, data: Any, momentum: float = 0.9) -> None:
    """Moves the ranges of a quantization-aware ``model`` towards those its
    quantised layers compute on ``data`` (exponential moving average:
    ``range = momentum * range + (1 - momentum) * observed``, as TF-MOT's
    moving-average quantizers), each layer run eagerly in order.

    Args:
        model: a model made by ``quantize_model``.
        data: inputs, as ``quantize_model``'s ``representative_data``.
        momentum: float in [0, 1): 0 replaces the ranges.
    """
    _check_model(model)
    if not is_quantized(model):
        raise ValueError(
            f"Argument `model`: {model.name!r} has no quantization-aware layer; "
            "make it with keras_feedback.quantization.quantize_model"
        )
    if not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
        raise ValueError(
            f"Argument `momentum` must be a float in [0, 1), got {momentum!r}"
        )
    _update(model, data, float(momentum), quantize=True)


@public("keras_feedback.quantization.strip")
def strip(model: keras.Model) -> keras.Model:
    """The float copy of a quantization-aware ``model``: ``Feedback`` layers
    without quantisation, ``Dense`` for ``QATDense``, the same weights (the
    ranges dropped)."""
    _check_model(model)
    return _clone(model, _to_float)


@public("keras_feedback.quantization.UpdateRanges", serializable=False)
class UpdateRanges(keras.callbacks.Callback):
    """Calls ``update_ranges`` on the model being trained every ``every``
    batches, on ``data``: the ranges follow the weights as QAT moves them.

    Args:
        data: inputs, as ``quantize_model``'s ``representative_data`` (a
            few batches: each update runs the quantised layers eagerly).
        every: positive int, batches between updates.
        momentum: as ``update_ranges``'s.
    """

    def __init__(self, data: Any, every: int = 100, momentum: float = 0.9):
        super().__init__()
        self.data = data
        self.every = check_int("every", every, 1)
        self.momentum = momentum
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self._batches % self.every == 0:
            update_ranges(self.model, self.data, self.momentum)
