"""SavedModel export for TF Serving: whole sequences, one step, initial states."""

import os
import shutil
import time
import warnings
from typing import Any
from typing import Dict
from typing import Optional
from typing import Union

import keras
import numpy as np
import tensorflow as tf

from keras_feedback._api import public
from keras_feedback.export import _atomic
from keras_feedback.export import _common
from keras_feedback.export import _trace

SERVING_DEFAULT = "serving_default"
STEP = "step"
INITIAL_STATE = "initial_state"


def _check_version(version):
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            f"Argument `version` must be a positive integer (TF Serving reads "
            f"numbered version folders), got {version!r}"
        )


def write_archive(plan, directory, kinds):
    """Writes ``plan``'s functions as a SavedModel at ``directory``.

    ``kinds`` maps each signature name to ``"sequence"``,
    ``"checked_sequence"``, ``"step"``, ``"checked_step"`` or
    ``"initial_state"``.
    """
    functions = {
        "sequence": plan.sequence_fn,
        "checked_sequence": plan.checked_sequence_fn,
        "step": plan.step_fn,
        "checked_step": plan.checked_step_fn,
        "initial_state": plan.initial_state_fn,
    }
    with _common.export_mode(plan.model):
        archive = keras.export.ExportArchive()
        archive.track(plan.traced)
        for name, kind in kinds.items():
            archive.add_endpoint(
                name, functions[kind], input_signature=plan.signature(kind)
            )
        archive.write_out(directory, verbose=False)


@public("keras_feedback.export.export_saved_model")
def export_saved_model(
    model: keras.Model,
    directory: Union[str, os.PathLike],
    version: int = 1,
    overwrite: bool = False,
    compute_dtype: Optional[str] = "float32",
) -> str:
    """Exports ``model`` as a SavedModel in TF Serving's layout.

    Writes ``<directory>/<version>/`` with the signatures:

    - ``serving_default``: whole sequences, ``{"x": (batch, time, features)}``
      -> ``{"y": ...}`` with dynamic batch and time (a model with several
      inputs or outputs uses their names; an explicit boolean mask input is
      one of them);
    - ``step``: one time step, ``{"x": (batch, features), <state>: (batch,
      size), ...}`` -> ``{"y": ..., <state>: new state, ...}``: a client
      streams a sequence through a stateless server by feeding the new
      states back. State names are ``<layer>_h``, ``<layer>_carry`` (lstm),
      ``<layer>_c`` (feedback) and, for layers that receive a mask,
      ``<layer>_output`` (the output a masked step repeats);
    - ``initial_state``: ``{"batch_size": ()}`` -> the states every
      sequence starts from: zeros, or for a stateful layer its current
      states (see below).

    ``step`` and ``initial_state`` are written when every layer can run one
    step at a time: ``Feedback`` layers going forwards, and layers that act on
    each time step independently (``Dense``, activations, merges,
    normalisation over features, dropout, ``Masking``, ``Embedding``, ...),
    in functional (nested included) or Sequential models; anything after a
    ``return_sequences=False`` layer is fine. Otherwise (``Bidirectional``,
    ``go_backwards``, Keras's own recurrent layers, layers that mix time
    steps) they are left out with a warning naming the layers.

    The graph uses the reference engine. Stateful layers are exported
    stateless: no call changes them; they start from a snapshot of the states
    they hold at export (set by ``reset_state(states)`` or left by their last
    call), like their next call in Keras. ``serving_default`` starts from
    them and ``initial_state`` returns them; being one row per row of the
    layer's fixed batch size, they fit that batch size only (any batch size
    when it is 1, the row then starting every sequence). A stateful layer
    whose states are all zero starts from zeros, for any batch size.

    Args:
        model: a built functional or Sequential Keras model.
        directory: the model's base folder (TF Serving's ``base_path``).
        version: positive int, the version folder to write.
        overwrite: replace ``<directory>/<version>`` when it exists: the new
            version is written beside it and swapped in at once (one
            ``renameat2`` exchange on Linux), the old one removed after; a
            killed export never leaves a partial version, and what it left
            beside the versions (non-numeric folders, which TF Serving
            ignores) is removed by the next export.
        compute_dtype: ``"float32"`` (default): the graph computes in
            float32, also for a model under a ``mixed_float16`` /
            ``mixed_bfloat16`` policy (whose variables are float32; its
            outputs are then float32); None: in the model's own dtypes.

    Returns:
        The path of the version folder.

    Example:

    >>> import keras, tempfile
    >>> import tensorflow as tf
    >>> import keras_feedback
    >>> inputs = keras.Input((None, 3))
    >>> h = keras_feedback.layers.Feedback(4, return_sequences=True)(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(h))
    >>> path = keras_feedback.export.export_saved_model(
    ...     model, tempfile.mkdtemp())
    >>> sorted(tf.saved_model.load(path).signatures)
    ['initial_state', 'serving_default', 'step']
    """
    _common.check_model(model)
    directory, target = version_target(directory, version, overwrite)
    plan = _trace.ExportPlan(model, compute_dtype=compute_dtype)
    kinds = {SERVING_DEFAULT: "checked_sequence"}
    if plan.streamable:
        kinds[STEP] = "checked_step"
        kinds[INITIAL_STATE] = "initial_state"
    else:
        warnings.warn(
            f"Model {model.name!r} is exported without the `step` and "
            f"`initial_state` signatures: {plan.step_problem_message()}",
            stacklevel=2,
        )
    return write_version(
        directory, target, lambda staging: write_archive(plan, staging, kinds)
    )


def version_target(directory, version, overwrite):
    """``(directory, <directory>/<version>)``, checked, after recovering what
    a killed export left (``_atomic.clean``)."""
    _check_version(version)
    directory = os.fspath(directory)
    target = os.path.join(directory, str(version))
    _common.check_target(target, True, "directory")
    # First recover a version a killed export left renamed aside.
    _atomic.clean(directory)
    _common.check_target(target, overwrite, "directory")
    return directory, target


def write_version(directory, target, write):
    """Runs ``write(staging)`` into a staging folder beside ``target`` and
    swaps it in (``_atomic.swap_folder``); returns ``target``."""
    os.makedirs(directory, exist_ok=True)
    staging = _atomic.staging_folder(directory, os.path.basename(target))
    try:
        write(staging)
        _atomic.swap_folder(staging, target)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return target


def _run_steps(signatures, named, batch):
    """Streams ``named`` through ``step``; returns per-step outputs, ms/step."""
    step = signatures[STEP]
    states = signatures[INITIAL_STATE](batch_size=tf.constant(batch, tf.int32))
    streamed = _common.stream(
        lambda feed: step(**feed),
        named,
        states,
        load=lambda feed: {k: tf.convert_to_tensor(v) for k, v in feed.items()},
    )
    return streamed.outputs, streamed.latency_ms


def compare_steps(step_outputs, expected):
    """``ErrorTally`` of streamed outputs against whole-sequence outputs.

    A per-step output (the model returns sequences) is compared at every
    step; a sequence summary (``return_sequences=False``) with the last step.
    """
    tally = _common.ErrorTally()
    for name, reference in expected.items():
        last = step_outputs[-1][name]
        if reference.ndim == last.ndim + 1:
            actual = np.stack([o[name] for o in step_outputs], axis=1)
        else:
            actual = last
        tally.add(name, actual, reference)
    return tally


@public("keras_feedback.export.verify_saved_model")
def verify_saved_model(
    model: keras.Model,
    directory: Union[str, os.PathLike],
    inputs: Any,
    version: int = 1,
    tolerance: Optional[float] = None,
) -> Dict[str, Any]:
    """Reloads an exported SavedModel and compares it with ``model``.

    Args:
        model: the Keras model that was exported.
        directory: the base folder given to ``export_saved_model``.
        inputs: whole sequences: an array ``(batch, time, ...)``, a list in
            the model's input order or a dict by input name.
        version: the version folder to read.
        tolerance: the max relative error (``*_max_rel_error``) allowed;
            None: by the compute dtype of ``model`` (the errors of a float32
            export against Keras's own rounding): 1e-4 for float32, 1e-2
            under ``mixed_float16``, 5e-2 under ``mixed_bfloat16``.

    Returns:
        A dict: ``serving_max_abs_error`` and ``serving_max_rel_error``
        (``serving_default`` against the Keras model),
        ``step_max_abs_error`` and ``step_max_rel_error`` (``step`` streamed
        over the time axis from ``initial_state``, against the Keras
        outputs; None without a ``step`` signature), ``signatures``,
        ``size_bytes``, ``serving_latency_ms`` (one call on ``inputs``) and
        ``step_latency_ms`` (median per step), ``nonfinite`` (where an output
        is NaN or Inf on either side, in words: such an output's errors are
        infinite), ``tolerance`` and ``within_tolerance`` (every output
        finite and every relative error at most ``tolerance``).
    """
    _check_version(version)
    tolerance = _common.tolerance_for(model, tolerance)
    path = os.path.join(os.fspath(directory), str(version))
    if not os.path.isdir(path):
        raise ValueError(f"Argument `directory`: no SavedModel version folder {path!r}")
    plan = _trace.ExportPlan(model, compute_dtype=None)
    named = plan.named_inputs(inputs)
    _common.check_finite_inputs(named)
    expected = plan.keras_outputs(named)
    loaded = tf.saved_model.load(path)
    signatures = loaded.signatures
    serving = signatures[SERVING_DEFAULT]
    feed = {name: tf.constant(value) for name, value in named.items()}
    serving(**feed)
    start = time.perf_counter()
    result = serving(**feed)
    serving_ms = 1e3 * (time.perf_counter() - start)
    serving = _common.ErrorTally()
    for name, reference in expected.items():
        serving.add(name, result[name].numpy(), reference)
    report = {
        "serving_max_abs_error": serving.max_abs,
        "serving_max_rel_error": serving.max_rel,
        "step_max_abs_error": None,
        "step_max_rel_error": None,
        "signatures": sorted(signatures),
        "size_bytes": _common.directory_size(path),
        "serving_latency_ms": serving_ms,
        "step_latency_ms": None,
        "nonfinite": [f"serving_default {p}" for p in serving.nonfinite],
    }
    tallies = [serving]
    if STEP in signatures:
        batch = next(iter(named.values())).shape[0]
        outputs, step_ms = _run_steps(signatures, named, batch)
        tally = compare_steps(outputs, expected)
        tallies.append(tally)
        report["nonfinite"] += [f"step {p}" for p in tally.nonfinite]
        report.update(
            step_max_abs_error=tally.max_abs,
            step_max_rel_error=tally.max_rel,
            step_latency_ms=step_ms,
        )
    report["tolerance"] = tolerance
    report["within_tolerance"] = all(t.within(tolerance) for t in tallies)
    return report
