"""From Keras's recurrent layers to ``Feedback``: ``Feedback.from_keras`` and ``convert``.

A ``Feedback`` layer with ``feedback_units=0`` is Keras's ``SimpleRNN``,
``GRU`` (either ``reset_after``) or ``LSTM``: the same weights, in the same
order, give the same outputs. These functions make that swap for a layer,
a ``Bidirectional`` wrapper of one, or every such layer of a model.
"""

import keras

from keras_feedback._api import public

_CORES = {
    keras.layers.SimpleRNN: "simple",
    keras.layers.GRU: "gru",
    keras.layers.LSTM: "lstm",
}
# Keys of a Keras SimpleRNN/GRU/LSTM config that Feedback takes as they are;
# the others (reset_after, use_cudnn, ...) Feedback interprets itself.
_DROPPED = ("activity_regularizer",)


def keras_only_arguments(kwargs, use_cudnn="auto"):
    """Checks the arguments of a Keras SimpleRNN/GRU/LSTM config that have
    no Feedback counterpart: accepted where Keras's meaning holds, else
    refused. Takes ``implementation`` (Keras's legacy choice of how the gate
    matmuls are grouped: any value, ignored, as Keras does) and
    ``time_major`` out of ``kwargs``."""
    if use_cudnn not in ("auto", True, False):
        raise ValueError(
            "Argument `use_cudnn` must be 'auto', True or False (Keras's values; "
            f"Feedback never runs cuDNN, and True fails when called), got "
            f"{use_cudnn!r}"
        )
    kwargs.pop("implementation", None)
    time_major = kwargs.pop("time_major", False)
    if time_major is not False:
        raise ValueError(
            "Argument `time_major`: Feedback takes (batch, time, features) "
            f"inputs only, got time_major={time_major!r}; transpose the inputs"
        )


def _core(layer):
    for cls, core in _CORES.items():
        if type(layer) is cls:
            return core
    return None


def convertible(layer):
    """Whether ``Feedback.from_keras`` converts ``layer``."""
    if isinstance(layer, keras.layers.Bidirectional):
        return _core(layer.forward_layer) is not None
    return _core(layer) is not None


def _features(layer):
    return int(layer.cell.kernel.shape[0])


def _feedback_from(layer):
    from keras_feedback.layers._feedback import Feedback

    core = _core(layer)
    config = {k: v for k, v in layer.get_config().items() if k not in _DROPPED}
    if layer.activity_regularizer is not None:
        raise ValueError(
            f"Layer {layer.name!r} has an activity_regularizer, which Feedback "
            "does not take; remove it (add it to the next layer) before converting"
        )
    # A clear error, not from_config's:
    keras_only_arguments(dict(config), config.get("use_cudnn", "auto"))
    converted = Feedback.from_config({**config, "core": core, "feedback_units": 0})
    if layer.built:
        states = _stateful_values(layer)
        batch = None if states is None else states[0].shape[0]
        converted.build((batch, None, _features(layer)))
        converted.set_weights(layer.get_weights())
        if states is not None:
            converted.reset_state(states)
    return converted


def _stateful_values(layer):
    """A built stateful Keras layer's current states (their first axis is
    its fixed batch size), or None for a layer that is not stateful."""
    if not layer.stateful:
        return None
    states = getattr(layer, "states", None)
    if not states:
        raise ValueError(
            f"Layer {layer.name!r} is stateful but holds no states to take its "
            "fixed batch size from: build it with `batch_shape=(batch, time, "
            "features)` before converting"
        )
    return [keras.ops.convert_to_numpy(s) for s in keras.tree.flatten(list(states))]


def from_keras(layer):
    """``Feedback.from_keras``: its documentation is there."""
    if isinstance(layer, keras.layers.Bidirectional) and convertible(layer):
        forward = _feedback_from(layer.forward_layer)
        backward = _feedback_from(layer.backward_layer)
        config = layer.get_config()
        wrapper = keras.layers.Bidirectional(
            forward,
            backward_layer=backward,
            merge_mode=config["merge_mode"],
            name=layer.name,
            dtype=layer.dtype_policy,
        )
        if layer.built:
            wrapper.build((None, None, _features(layer.forward_layer)))
            # Keras's Bidirectional rebuilds its forward layer from the config.
            wrapper.forward_layer.set_weights(layer.forward_layer.get_weights())
            wrapper.backward_layer.set_weights(layer.backward_layer.get_weights())
        return wrapper
    if _core(layer) is None:
        raise TypeError(
            "Argument `layer` must be a keras.layers.SimpleRNN, GRU or LSTM, or a "
            f"Bidirectional wrapper of one, got {type(layer).__name__}"
        )
    return _feedback_from(layer)


@public("keras_feedback.layers.convert", serializable=False)
def convert(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with every Keras recurrent layer made ``Feedback``.

    Every ``SimpleRNN``, ``GRU`` and ``LSTM`` (alone or in a
    ``Bidirectional``), also inside nested ``Sequential`` and functional
    models, becomes the equivalent ``Feedback`` layer
    (``Feedback.from_keras``); every other layer is cloned. All weights are copied: the new model computes
    what ``model`` computes. ``model`` itself is not changed. The new model
    is not compiled.

    Args:
        model: a built ``Sequential`` or functional ``keras.Model``
            (subclassed models have no graph to rebuild: convert their layers
            with Feedback.from_keras in their ``__init__``).

    Returns:
        The new ``keras.Model``.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_feedback.layers import convert
    >>> model = keras.Sequential([
    ...     keras.Input((None, 3)), keras.layers.LSTM(4), keras.layers.Dense(1)])
    >>> converted = convert(model)
    >>> print(*(type(layer).__name__ for layer in converted.layers))
    Feedback Dense
    >>> x = np.ones((2, 5, 3), "float32")
    >>> bool(np.allclose(converted(x), model(x), atol=1e-6))
    True
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `model` must be a keras.Model, got {type(model).__name__}"
        )
    if not model.built or not hasattr(model, "inputs") or model.inputs is None:
        raise ValueError(
            "Argument `model` must be a built Sequential or functional model "
            f"(with inputs), got {type(model).__name__} {model.name!r}; for a "
            "subclassed model, convert its layers with Feedback.from_keras"
        )
    copies = []

    def clone(layer):
        if convertible(layer):
            return from_keras(layer)
        new = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, keras.layers.Layer):  # not an op of the graph
            copies.append((layer, new))
        return new

    converted = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in copies:
        new.set_weights(old.get_weights())
    return converted
