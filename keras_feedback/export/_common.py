"""Checks and helpers shared by the SavedModel and LiteRT exporters."""

import contextlib
import json
import os
import re
import time
from typing import Any
from typing import NamedTuple

import keras
import numpy as np

from keras_feedback import engine as engines
from keras_feedback._api import public
from keras_feedback._checks import check_bool
from keras_feedback.layers._feedback_loop import nested_layers

# Default tolerance of ``verify_*`` (and the CLI): the max error relative to
# the largest |Keras output| of an export that computes in float32, by the
# compute dtype of the Keras model it is compared with. In float32 that is
# float32 rounding; under a mixed policy it is the Keras model's own
# half-precision rounding (the errors measured: docs/deploy.md).
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
    """The one writer rule of every ``export_*``: raises when ``path`` exists
    and ``overwrite`` is false, or when a folder above it is a file (the
    writer then replaces ``path`` atomically, ``_atomic``)."""
    overwrite = check_bool("overwrite", overwrite)
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
    (``engine.scope``) and its calls are pure (``engine.pure_calls``): an exported
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
        stack.enter_context(engines.pure_calls())
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


def _nonfinite_problem(actual, expected):
    """What is not finite in ``actual`` or ``expected``, in words, or None."""
    finite_actual = np.isfinite(actual)
    finite_expected = np.isfinite(expected)
    if finite_actual.all() and finite_expected.all():
        return None
    parts = []
    only_actual = ~finite_actual & finite_expected
    for label, where in (("NaN", np.isnan(actual)), ("Inf", np.isinf(actual))):
        count = int(np.count_nonzero(where & only_actual))
        if count:
            parts.append(f"{count} {label} where Keras is finite")
    only_expected = finite_actual & ~finite_expected
    for label, where in (("NaN", np.isnan(expected)), ("Inf", np.isinf(expected))):
        count = int(np.count_nonzero(where & only_expected))
        if count:
            parts.append(f"Keras has {count} {label} where the export is finite")
    both = int(np.count_nonzero(~finite_actual & ~finite_expected))
    if both:
        parts.append(
            f"{both} values non-finite in both (the Keras model itself is not finite)"
        )
    first = np.argwhere(~(finite_actual & finite_expected))[0]
    return f"{', '.join(parts)}; first at index {tuple(int(i) for i in first)}"


def errors(actual, expected):
    """Errors of ``actual`` against ``expected``.

    Returns:
        ``(max_abs, max_rel, norm_rel)``: the largest absolute error, that
        error over the largest |expected| (the error relative to the output's
        scale), and ``||actual - expected|| / ||expected||`` (Euclidean norms
        over every element). A value that is not finite on either side makes
        all three infinite (``ErrorTally`` says where).
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
    if _nonfinite_problem(actual, expected):
        return np.inf, np.inf, np.inf
    difference = actual - expected
    error = float(np.max(np.abs(difference)))
    scale = float(np.max(np.abs(expected)))
    norm = float(np.linalg.norm(expected))
    return (
        error,
        error / scale if scale else error,
        float(np.linalg.norm(difference)) / norm if norm else error,
    )


@public("keras_feedback.export.ErrorTally", serializable=False)
class ErrorTally:
    """The errors of each output against Keras's, and the worst over all.

    Every verifier (``verify_saved_model``, ``verify_litert``, the
    ``keras-feedback export`` table, the demo's parity rows) compares through
    this one tally. A value that is not finite (NaN or Inf) in an output, on
    either side, makes that output's errors infinite, never 0.0, and is
    described in ``nonfinite`` (``"output y: 12 NaN where Keras is finite;
    first at index (0, 3, 1)"``), so ``within(tolerance)`` is False for any
    tolerance. ``json_report`` writes such a report as valid JSON.

    Example:

    >>> from keras_feedback.export import ErrorTally
    >>> tally = ErrorTally()
    >>> _ = tally.add("y", [1.0, float("nan")], [1.0, 2.0])
    >>> tally.max_rel, tally.within(1e-4)
    (inf, False)
    >>> tally.nonfinite
    ['output y: 1 NaN where Keras is finite; first at index (1,)']
    """

    def __init__(self):
        self.max_abs = self.max_rel = self.norm_rel = 0.0
        self.per_output = {}
        self.nonfinite = []

    def add(self, name: str, actual: Any, expected: Any) -> "ErrorTally":
        """Compares one output (``actual``, the export's) with ``expected``
        (Keras's) and keeps the worst errors."""
        actual = np.asarray(actual, np.float64)
        expected = np.asarray(expected, np.float64)
        max_abs, max_rel, norm_rel = errors(actual, expected)
        problem = _nonfinite_problem(actual, expected) if actual.size else None
        self.per_output[name] = {
            "max_abs_error": max_abs,
            "max_rel_error": max_rel,
            "norm_rel_error": norm_rel,
            "nonfinite": problem,
        }
        if problem:
            self.nonfinite.append(f"output {name}: {problem}")
        self.max_abs = max(self.max_abs, max_abs)
        self.max_rel = max(self.max_rel, max_rel)
        self.norm_rel = max(self.norm_rel, norm_rel)
        return self

    def within(self, tolerance: float) -> bool:
        """True when every output is finite and within ``tolerance`` (the
        max error relative to the largest |Keras output|)."""
        return not self.nonfinite and bool(self.max_rel <= tolerance)


class Streamed(NamedTuple):
    """What ``stream`` returns."""

    outputs: list  # each step's results but the states, {name: numpy array}
    inputs: list  # with ``record``: each step's inputs and entering states
    latency_ms: float  # the median time of ``run``, the first step left out


def stream(run, named, states, load=None, read=None, record=False):
    """Steps a model over the time axis of ``named``, its states fed back:
    the one loop of every verifier of a step signature and of calibration.

    Args:
        run: called once a step with the step's inputs and states (a dict
            by name, as ``load`` makes it); returns the results (or, with
            ``read``, anything ``read`` takes). Only this call is timed.
        named: ``{input name: (batch, time, ...) array}``.
        states: ``{state name: value}`` entering the first step.
        load: makes what ``run`` takes of the step's dict (None: the dict).
        read: makes the results ``{name: value}`` of what ``run`` returned,
            the new states under the states' names (None: ``run``'s).
        record: keep each step's dict (numpy arrays) in ``inputs``.
    """
    steps = next(iter(named.values())).shape[1]
    outputs, inputs, seconds = [], [], []
    for t in range(steps):
        feed = {**{name: value[:, t] for name, value in named.items()}, **states}
        if record:
            inputs.append({name: np.array(value) for name, value in feed.items()})
        feed = feed if load is None else load(feed)
        start = time.perf_counter()
        result = run(feed)
        seconds.append(time.perf_counter() - start)
        result = result if read is None else read(result)
        states = {name: result[name] for name in states}
        outputs.append({k: np.asarray(v) for k, v in result.items() if k not in states})
    latency = 1e3 * float(np.median(seconds[1:] if len(seconds) > 1 else seconds))
    return Streamed(outputs, inputs, latency)


def check_finite_inputs(named, argument="inputs"):
    """Raises unless every floating value of the verification inputs is
    finite (they are the user's test data: a NaN in them proves nothing)."""
    for name, value in named.items():
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.floating):
            continue
        bad = ~np.isfinite(value)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"Argument `{argument}`: input {name!r} has "
                f"{int(np.count_nonzero(bad))} non-finite values (NaN or Inf), "
                f"the first at index {first}. Expected finite test data: a "
                "comparison on NaN inputs cannot show that an export is right "
                "(padding under a mask can be any finite value, e.g. zeros)."
            )


def _json_value(value):
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (np.floating, float)) and not isinstance(value, bool):
        value = float(value)
        if np.isnan(value):
            return "nan"
        if np.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return _json_value(value.tolist())
    return value


@public("keras_feedback.export.json_report")
def json_report(report: Any, **dump_options: Any) -> str:
    """A verification report (or any dict of figures) as strict JSON.

    JSON has no infinity or NaN: an infinite error is written as the string
    ``"inf"`` (``"-inf"``) and NaN as ``"nan"``, so the text is valid JSON
    that any parser reads (``json.dumps`` alone would write ``Infinity``,
    which strict parsers refuse). NumPy scalars and arrays become numbers
    and lists. ``dump_options`` go to ``json.dumps`` (``indent=1``, ...).

    Example:

    >>> from keras_feedback.export import json_report
    >>> json_report({"max_rel_error": float("inf"), "within_tolerance": False})
    '{"max_rel_error": "inf", "within_tolerance": false}'
    """
    return json.dumps(_json_value(report), allow_nan=False, **dump_options)
