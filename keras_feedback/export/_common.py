"""Checks and helpers shared by the SavedModel and LiteRT exporters."""

import contextlib
import os
import re

import keras
import numpy as np

from keras_feedback import engine as engines
from keras_feedback.layers._feedback_loop import nested_layers
from keras_feedback.layers._recurrent import pure_calls

# Default tolerance of ``verify_*`` (and the CLI): the max error relative to
# the largest |Keras output| of an export that computes in float32, by the
# compute dtype of the Keras model it is compared with. In float32 that is
# float32 rounding (measured <= 5e-7); under a mixed policy it is the Keras
# model's own half-precision rounding (measured on the 24 models of
# tests/test_export_matrix.py and on stacked models: see export/README.md).
DEFAULT_TOLERANCES = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
HALF_DTYPES = ("float16", "bfloat16")

# The engine every exported graph is traced with: a plain ``tf.while_loop``
# that TF Serving runs as is and that converts to LiteRT's builtin WHILE.
EXPORT_ENGINE = "reference"


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


def compute_dtype_of(model):
    """The least precise compute dtype of ``model``'s layers: ``"float16"``,
    ``"bfloat16"`` or ``"float32"`` (also for float64)."""
    dtypes = {getattr(layer, "compute_dtype", None) for layer in nested_layers(model)}
    for dtype in HALF_DTYPES:
        if dtype in dtypes:
            return dtype
    return "float32"


def tolerance_for(model, tolerance, argument="tolerance"):
    """``tolerance``, or by default ``DEFAULT_TOLERANCES`` of the model's
    compute dtype."""
    if tolerance is None:
        return DEFAULT_TOLERANCES[compute_dtype_of(model)]
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
        raise TypeError(
            f"Argument `{argument}` must be a number or None, got "
            f"{type(tolerance).__name__}: {tolerance!r}"
        )
    if not tolerance >= 0:
        raise ValueError(
            f"Argument `{argument}` must be a non-negative number, got {tolerance!r}"
        )
    return float(tolerance)


def check_target(path, overwrite, argument):
    """Raises when ``path`` exists and ``overwrite`` is false, or when a
    folder above it is a file."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise ValueError(
            f"Argument `{argument}`: {os.fspath(path)!r} cannot be written: "
            f"{parent!r} is a file, not a folder. Expected a path whose "
            "existing parent is a folder."
        )
    if os.path.lexists(path) and not overwrite:
        raise ValueError(
            f"Argument `{argument}`: {os.fspath(path)!r} already exists. Pass "
            "overwrite=True to replace it."
        )


@contextlib.contextmanager
def export_mode(model, engine=True, unroll=False):
    """Traces every recurrent layer of ``model`` for export.

    Inside the block every feedback layer runs the reference engine
    (``engine.scope``) and its calls are pure (``pure_calls``): an exported
    graph is a pure function (TF Serving's contract, and the client holds
    the state of a stream), so a stateful layer never assigns its variables;
    it starts from a snapshot of its current states where Keras would read
    them. ``engine=False`` keeps each layer's own engine (to compare with);
    ``unroll=True`` unrolls every loop over a static time axis.
    Mutates no layer: it works for any layer built on ``FeedbackRNN``.
    """
    del model  # every layer called in the block, whatever model holds it
    with contextlib.ExitStack() as stack:
        if engine:
            stack.enter_context(engines.scope(EXPORT_ENGINE, unroll=unroll))
        stack.enter_context(pure_calls())
        yield


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
