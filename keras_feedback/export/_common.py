"""Checks and helpers shared by the SavedModel and LiteRT exporters."""

import contextlib
import os
import re

import keras
import numpy as np
import tensorflow as tf

from keras_feedback.layers._conv_feedback import ConvFeedback2D
from keras_feedback.layers._feedback import Feedback
from keras_feedback.layers._feedback_loop import nested_layers

# The engine every exported graph is traced with: a plain ``tf.while_loop``
# that TF Serving runs as is and that converts to LiteRT's builtin WHILE.
EXPORT_ENGINE = "reference"
ENGINE_LAYERS = (Feedback, ConvFeedback2D)


def check_model(model):
    """Raises unless ``model`` is a built functional or Sequential model."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `model` must be a keras.Model, got {type(model).__name__}: "
            f"{model!r}"
        )
    if not model.built:
        raise ValueError(
            f"Argument `model` must be built before it is exported, got the "
            f"unbuilt model {model.name!r}: call it on data, or build it from "
            "`keras.Input`"
        )
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if not inputs:
        raise ValueError(
            f"Argument `model` must be a functional or Sequential model with "
            f"known inputs (built from `keras.Input`), got {model.name!r} "
            f"({type(model).__name__}) which has no symbolic inputs"
        )
    return model


def check_target(path, overwrite, argument):
    """Raises when ``path`` exists and ``overwrite`` is false."""
    if os.path.lexists(path) and not overwrite:
        raise ValueError(
            f"Argument `{argument}`: {os.fspath(path)!r} already exists. Pass "
            "overwrite=True to replace it."
        )


def start_states(layer):
    """The states an exported ``Feedback`` layer starts from; None for zeros.

    A stateful layer starts from its current states (set by ``reset_state``
    or left by its last call), as its next call in Keras would: the export
    holds a snapshot of them, one row per row of the layer's fixed batch.
    Every other layer, and a stateful one whose states are all zero, starts
    from zeros, for any batch size.

    Returns:
        None, or one numpy array ``(rows, size)`` per state (h, carry, c).
    """
    variables = layer.states
    if variables is None:
        return None
    with tf.init_scope():  # read the values, also while tracing
        values = [np.array(variable.numpy()) for variable in variables]
    if not any(np.any(value) for value in values):
        return None
    return values


def start_state_for_batch(layer, value, batch):
    """One of ``start_states(layer)`` for a batch of ``batch`` rows: as it
    is, or its single row repeated when the layer's batch size is 1."""
    rows, size = value.shape
    value = tf.constant(value, layer.cell.compute_dtype)
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


def _initial_state_fn(layer, values):
    def get_initial_state(batch_size=None):
        batch = tf.convert_to_tensor(batch_size)
        return [start_state_for_batch(layer, value, batch) for value in values]

    return get_initial_state


@contextlib.contextmanager
def export_mode(model, engine=True):
    """Traces every recurrent layer of ``model`` for export.

    Inside the block the layers (``ENGINE_LAYERS``) use the reference engine
    and the ``Feedback`` layers are stateless:
    an exported graph is a pure function (TF Serving's contract, and the
    client holds the state of a stream), so a stateful layer never assigns
    its variables; it starts from a snapshot of its current states
    (``start_states``) where Keras would read them. ``engine=False`` keeps
    each layer's own engine (to compare with).
    """
    found = list(nested_layers(model))
    layers = [layer for layer in found if isinstance(layer, Feedback)]
    # Every layer that runs an engine: a graph of the fused engine's
    # compiled loops converts to LiteRT without an error but reads memory
    # it never wrote (outputs of 1e12 measured for a ConvFeedback2D).
    engine_layers = [layer for layer in found if isinstance(layer, ENGINE_LAYERS)]
    engines = [layer.engine for layer in engine_layers]
    saved = [layer.stateful for layer in layers]
    try:
        if engine:
            for layer in engine_layers:
                layer.engine = EXPORT_ENGINE
        for layer in layers:
            start = start_states(layer)
            layer.stateful = False
            if start is not None:
                # A stateless layer asks its cell for the states it starts
                # from (the Keras cell contract).
                object.__setattr__(
                    layer.cell, "get_initial_state", _initial_state_fn(layer, start)
                )
        yield
    finally:
        for layer, name in zip(engine_layers, engines):
            layer.engine = name
        for layer, stateful in zip(layers, saved):
            layer.stateful = stateful
            if "get_initial_state" in vars(layer.cell):
                object.__delattr__(layer.cell, "get_initial_state")


def signature_name(name):
    """``name`` as a valid signature key: letters, digits and underscores."""
    name = re.sub(r"[^0-9A-Za-z_]", "_", str(name))
    return name if re.match(r"[A-Za-z]", name) else f"t_{name}"


def directory_size(path):
    """Total size in bytes of the files under ``path``."""
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def errors(actual, expected):
    """Errors of ``actual`` against ``expected``.

    Returns:
        ``(max_abs, max_rel, norm_rel)``: the largest absolute error, that
        error over the largest |expected| (the error relative to the output's
        scale), and ``||actual - expected|| / ||expected||`` (Euclidean norms
        over every element).
    """
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise ValueError(
            f"Exported output has shape {actual.shape}, Keras output has shape "
            f"{expected.shape}"
        )
    if not actual.size:
        return 0.0, 0.0, 0.0
    difference = actual - expected
    error = float(np.max(np.abs(difference)))
    scale = float(np.max(np.abs(expected)))
    norm = float(np.linalg.norm(expected))
    return (
        error,
        error / scale if scale else error,
        float(np.linalg.norm(difference)) / norm if norm else error,
    )


class ErrorTally:
    """The errors of each output, and the worst of each over all outputs."""

    def __init__(self):
        self.max_abs = self.max_rel = self.norm_rel = 0.0
        self.per_output = {}

    def add(self, name, actual, expected):
        max_abs, max_rel, norm_rel = errors(actual, expected)
        self.per_output[name] = {
            "max_abs_error": max_abs,
            "max_rel_error": max_rel,
            "norm_rel_error": norm_rel,
        }
        self.max_abs = max(self.max_abs, max_abs)
        self.max_rel = max(self.max_rel, max_rel)
        self.norm_rel = max(self.norm_rel, norm_rel)
        return self
