"""LiteRT (TFLite) export with builtin ops only, and its verification.

The int8 calibration and quantisation helpers are in ``_calibration``; the
rewriting of the converted flatbuffer (signature, dequantised weights) and
``litert_ops`` are in ``_flatbuffer``.
"""

import os
import re
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
from keras_feedback._checks import check_bool
from keras_feedback.export import _atomic
from keras_feedback.export import _calibration
from keras_feedback.export import _common
from keras_feedback.export import _flatbuffer
from keras_feedback.export import _fused_lstm
from keras_feedback.export import _saved_model
from keras_feedback.export import _trace
from keras_feedback.export._flatbuffer import litert_ops
from keras_feedback.layers._feedback_loop import nested_layers
from keras_feedback.layers._recurrent import FeedbackRNN
from keras_feedback.quantization._qat import is_quantized as quantization_aware
from keras_feedback.quantization._qat import strip as strip_quantization

SEQUENCE_SIGNATURE = _saved_model.SERVING_DEFAULT
STEP_SIGNATURE = _saved_model.STEP


def _interpreter(model_path=None, model_content=None):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=model_path, model_content=model_content)


def _layer_of(location, layers):
    """The innermost layer of ``layers`` named in a converter location."""
    found = None
    for component in location.split("@")[0].split("/"):
        for layer in layers:
            if re.fullmatch(re.escape(layer.name) + r"(_\d+)?", component):
                found = layer
                break
    return found


def _conversion_error(error, model):
    """A ValueError naming the ops (and their layers) LiteRT has no kernel for."""
    layers = [layer for layer in nested_layers(model) if layer is not model]
    layers.sort(key=lambda layer: -len(layer.name))
    problems = {}
    ours = False
    for data in getattr(error, "errors", None) or []:
        op = data.operator.name
        locations = [call.name for call in data.location.call]
        if not op or not locations:
            continue
        layer = None
        for location in locations:
            layer = _layer_of(location, layers)
            if layer is not None:
                break
        where = _trace.describe(layer) if layer is not None else locations[0]
        ours = ours or isinstance(layer, FeedbackRNN)
        problems.setdefault(op.removeprefix("tf."), where)
    if problems:
        found = ", ".join(f"{op} (from {where})" for op, where in problems.items())
        advice = (
            "This is a bug of keras_feedback: please report it."
            if ours
            else "Replace that layer (for a recurrent layer: "
            "keras_feedback.layers.Feedback) or simplify it."
        )
        return ValueError(
            f"Argument `model` cannot be converted to LiteRT with builtin ops "
            f"only: {found} would need Flex (select TF) ops, which the stock "
            f"LiteRT interpreter does not run. {advice}"
        )
    # The converter repeats a message per op, or leaves it empty and puts
    # the MLIR diagnostics in its error data.
    lines = str(error).splitlines() or [
        data.error_message for data in getattr(error, "errors", None) or []
    ]
    detail = "; ".join(
        dict.fromkeys(line.strip().rstrip(".") for line in lines if line.strip())
    )
    return ValueError(
        f"LiteRT conversion of model {model.name!r} failed: "
        f"{detail or type(error).__name__ + ' (the diagnostics are on stderr)'}"
    )


def _concrete_function(plan, kind, unroll=False):
    functions = {"sequence": plan.sequence_fn, "step": plan.step_fn}
    with _common.export_mode(plan.model, unroll=unroll):
        function = tf.function(
            functions[kind], input_signature=plan.signature(kind), autograph=False
        )
        return function.get_concrete_function()


def make_converter(concrete_function, trackable):
    """A LiteRT converter of ``concrete_function``, whose variables
    ``trackable`` holds."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [concrete_function], trackable
    )
    # Freeze the traced function directly rather than through a SavedModel:
    # faster (docs/deploy.md, D3), and it also freezes the variables the
    # WHILE body reads.
    converter.experimental_lower_to_saved_model = False
    return converter


def configure(
    converter, concrete_function, quantization, samples, streaming, qat=False
):
    """Sets the ops and the quantisation of ``converter``; ``samples``
    calibrate ``"int8"`` and ``"int16x8"`` (None for the other modes);
    ``qat``: the model is quantization-aware, its FakeQuant ops give the
    int8 ranges (the MLIR quantizer's QAT mode: no calibration)."""
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if qat:
        converter.experimental_new_quantizer = True
        return converter
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int16x8":
        names = flat_names(concrete_function.structured_input_signature[0][0])
        converter.representative_dataset = lambda: (
            [sample[name] for name in names] for sample in samples
        )
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    elif quantization == "int8":
        names = flat_names(concrete_function.structured_input_signature[0][0])
        converter.representative_dataset = lambda: (
            [sample[name] for name in names] for sample in samples
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # Step model: the MLIR quantizer rejects the concatenation of the
        # sigmoid feedback signal with the hidden state (fixed vs calibrated
        # scales); the calibration-based quantizer requantizes the inputs of
        # the concat. Whole sequences: that quantizer does not support WHILE.
        converter.experimental_new_quantizer = not streaming
    return converter


def _convert(converter, function, quantization, samples, streaming, model, qat=False):
    """The converted content, or the ValueError of ``_conversion_error``."""
    try:
        with warnings.catch_warnings():
            # The calibration quantizer's note that float inputs keep no
            # range: intended, the int8 model has float32 inputs.
            warnings.filterwarnings(
                "ignore", message="Statistics for quantized inputs were expected"
            )
            # The debugger's own (unused) interpreter is tf.lite's.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter")
            if quantization == "int8" and not streaming and not qat:
                return _calibration.quantize_sequence_int8(
                    converter,
                    samples,
                    flat_names(function.structured_input_signature[0][0]),
                )
            return converter.convert()
    except Exception as error:  # the converter raises ConverterError
        raise _conversion_error(error, model) from None


def _fused_content(plan, quantization, samples, batch_size):
    """The whole-sequence file with the fused LSTM op (``_fused_lstm``) and
    the traced function."""
    batch = _fused_lstm.file_batch(plan, batch_size)
    plan.traced, others = _fused_lstm.fused_model(plan.traced)
    function = _fused_lstm.concrete_function(plan, batch)
    fused, unfused = _fused_lstm.fused_calls(plan.traced)
    if not fused:
        reasons = _fused_lstm.describe_unfused(unfused + others)
        raise ValueError(
            f"Argument `fused_lstm`=True: no layer of model {plan.model.name!r} "
            f"can run as LiteRT's {_fused_lstm.FUSED_LSTM_OP} op"
            + (f" ({reasons})" if reasons else " (it has no Feedback layer)")
            + ". Export it with fused_lstm=False (the WHILE loop)."
        )
    if samples is not None:
        samples = _fused_lstm.rebatched(samples, batch)
    with _fused_lstm.saved_model_converter(plan.traced, function) as converter:
        configure(converter, function, quantization, samples, False)
        content = _convert(
            converter, function, quantization, samples, False, plan.model
        )
    ops = litert_ops(content)
    if quantization == "int8" and "WHILE" in ops:
        loops = _fused_lstm.describe_unfused(unfused + others) or "not Feedback"
        raise ValueError(
            f"Argument `fused_lstm`=True cannot be combined with "
            f"quantization='int8' for model {plan.model.name!r}, whose other "
            f"recurrent layers stay WHILE loops ({loops}): "
            "the converter's SavedModel path, which the fused op needs, "
            "quantizes a WHILE loop to int8 wrongly (docs/deploy.md). Export it "
            "with fused_lstm=False, or in float32, float16 or dynamic_range."
        )
    if _fused_lstm.FUSED_LSTM_OP not in ops:
        raise ValueError(
            f"Argument `fused_lstm`=True: the converter did not fuse the LSTM "
            f"layers of model {plan.model.name!r} (ops: {ops}); "
            "this is a bug of keras_feedback: please report it"
        )
    return content, function


def flat_names(structure):
    """Names of a dict's values in the order ``tf.nest.flatten`` gives them."""
    names = list(structure)
    return tf.nest.flatten({name: name for name in names})


def signature_names(concrete_function):
    """The names of ``concrete_function``'s inputs and of its outputs (dicts
    of one argument), in the order of the converted file's tensors."""
    return (
        flat_names(concrete_function.structured_input_signature[0][0]),
        flat_names(concrete_function.structured_outputs),
    )


def finished(content, quantization, concrete_function, key=None):
    """The converted ``content`` as it is written: the weights of a
    ``"dynamic_range"`` file dequantised, those of a float16 or dynamic-range
    loop widened (``_flatbuffer``), the signature ``key`` written (None: the
    file has its own), and builtin ops only (else a ``ValueError``)."""
    if quantization == "dynamic_range":
        content = _flatbuffer.dequantize_weights(content)
    if quantization in ("float16", "dynamic_range"):
        content = _flatbuffer.widen_loop_weights(content)
    if key is not None:
        content = _flatbuffer.with_signature(
            content, key, *signature_names(concrete_function)
        )
    not_builtin = [
        op for op in litert_ops(content) if not re.fullmatch(r"[A-Z0-9_]+", op)
    ]
    if not_builtin:
        raise ValueError(
            f"Argument `model`: its LiteRT conversion contains the non-builtin "
            f"ops {not_builtin}, which the stock LiteRT interpreter does not run"
        )
    return content


@public("keras_feedback.export.export_litert")
def export_litert(
    model: keras.Model,
    path: Union[str, os.PathLike],
    quantization: Optional[str] = None,
    representative_data: Any = None,
    streaming: bool = False,
    overwrite: bool = False,
    fused_lstm: bool = False,
    batch_size: Optional[int] = None,
) -> str:
    """Converts ``model`` to a LiteRT (``.tflite``) file with builtin ops only.

    The whole-sequence model keeps a dynamic batch and time axis (resize its
    inputs with the interpreter's ``resize_tensor_input``); its recurrence is
    one builtin ``WHILE`` op. With ``streaming=True`` the file holds the step
    model instead: signature ``"step"``, inputs ``x`` ``(batch, features)``
    and the states, outputs ``y`` and the new states, under the names of
    ``export_saved_model``'s ``step`` signature; a stream starts from the
    states its ``initial_state`` signature returns (zeros, unless a stateful
    layer holds states). An op that needs Flex (select TF ops) is an error
    naming the op and its layer, and nothing is written; the file is written
    atomically.

    Quantisation: ``"float16"`` and ``"dynamic_range"`` compute in float32
    (on float16- or int8-rounded weights: their error is the rounding of the
    weights); ``"int8"`` rounds every tensor and its error grows with
    residual cores, whose states grow over the sequence; ``"int16x8"``
    leaves about the int8 weights' rounding. The errors, sizes and speeds
    measured on the test suite's models are in docs/deploy.md.

    Args:
        model: a built functional or Sequential Keras model.
        path: the ``.tflite`` file to write.
        quantization: None (float32); ``"float16"`` (weights stored as
            float16); ``"dynamic_range"`` (the kernels of 1024 weights or
            more stored in int8 with one scale per output channel; every
            op computes in float32, as with float16: a step model
            dequantises the weights once when LiteRT loads it, a
            whole-sequence model widens them at every invoke, outside its
            loop, with CAST ops, since LiteRT's XNNPACK delegate runs a
            loop's DEQUANTIZE ops wrongly at times; docs/deploy.md);
            or ``"int8"`` (full integer, needs
            ``representative_data``: every op computes in int8, with
            float32 inputs and outputs; in the whole-sequence model the loop
            carries its states in float32 between steps, and its
            concatenations and output writes (SCATTER_ND) stay float32);
            or ``"int16x8"`` (LiteRT's 16x8 mode: int16 activations, int8
            weights, calibrated like ``"int8"`` with headroom on the ranges
            (4x the inputs', 2x the states'), float32 inputs and outputs;
            its error is mostly the int8 weights', see docs/deploy.md;
            for whole sequences the model needs a fixed time axis, over
            which the file is unrolled: LiteRT's 16x8 quantizer cannot
            quantize a ``WHILE`` loop). A model under a
            mixed precision policy is converted computing in float32.
        representative_data: example sequences for int8 / int16x8
            calibration, as long
            as those the model will see (beyond the calibrated range a
            growing state saturates): an array ``(batch, time, ...)`` (a list
            or dict of arrays for a model with several inputs), or a callable
            returning an iterable of such batches. The whole-sequence model
            is calibrated on them; the step model on every step of them,
            with the states the model reaches there.
        streaming: write the step model rather than the whole-sequence one.
        overwrite: replace ``path`` when it exists.
        fused_lstm: run every Keras-compatible LSTM layer (``core="lstm"``,
            ``feedback_units=0``, tanh / sigmoid, no attention,
            ``output_units``, residual, layer norm, ``return_state`` or
            ``stateful``) called without mask or initial states as LiteRT's
            fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` builtin instead of a
            ``WHILE`` loop (whole-sequence model; other layers keep their
            loop; an error when no layer can). Faster in float, slower in
            int8 (docs/deploy.md), but the file changes: its batch size is
            fixed (``batch_size``), and the op keeps its states in LiteRT
            variable tensors, which carry the final states of one invoke
            into the next: call the interpreter's ``reset_all_variables()``
            before each new sequence (``verify_litert`` does). Not with
            ``"int16x8"`` (no 16x8 kernel), nor with ``"int8"`` when a
            ``WHILE`` loop remains. Default False: the ``WHILE`` loop, with
            a dynamic batch and no state between invokes.
        batch_size: the fixed batch size of a ``fused_lstm`` file; None:
            the model's own fixed batch size, else 1.

    Returns:
        ``path``.

    Example:

    >>> import keras, os, tempfile
    >>> import keras_feedback
    >>> inputs = keras.Input((None, 3))
    >>> h = keras_feedback.layers.Feedback(4, return_sequences=True)(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(h))
    >>> path = keras_feedback.export.export_litert(
    ...     model, os.path.join(tempfile.mkdtemp(), "model.tflite"))
    >>> "WHILE" in keras_feedback.export.litert_ops(path)
    True
    """
    _common.check_model(model)
    qat = quantization_aware(model)
    _calibration.check_quantization(quantization, representative_data, qat)
    streaming = check_bool("streaming", streaming)
    if qat and fused_lstm:
        raise ValueError(
            f"Argument `fused_lstm`=True: model {model.name!r} is "
            "quantization-aware, and LiteRT's fused LSTM op takes no "
            "FakeQuant ranges; export it with fused_lstm=False"
        )
    _fused_lstm.check_option(fused_lstm, batch_size, streaming, quantization)
    path = os.fspath(path)
    _common.check_target(path, overwrite, "path")
    plan = _trace.ExportPlan(model)
    if streaming and not plan.streamable:
        raise ValueError(
            f"Argument `streaming`=True needs a model that runs one step at a "
            f"time; {model.name!r} does not: {plan.step_problem_message()}"
        )
    # Whole sequences in 16x8: unrolled over a fixed time axis (LiteRT's 16x8
    # quantizer cannot quantize a WHILE loop; docs/deploy.md).
    unrolled = quantization == "int16x8" and not streaming
    if unrolled:
        dynamic = [
            n
            for n, spec in plan.input_specs.items()
            if spec.shape.rank >= 2 and spec.shape[1] is None
        ]
        if dynamic:
            raise ValueError(
                "Argument `quantization`='int16x8' for whole sequences needs a "
                f"fixed time axis, and inputs {dynamic} of model {model.name!r} "
                "have none: LiteRT's 16x8 quantizer cannot quantize a WHILE "
                "loop, so the sequence model is unrolled over its steps. Build "
                "the model on keras.Input((time, features)), or export the "
                "step model (streaming=True)."
            )
        residual = [
            layer.name
            for layer in nested_layers(model)
            if isinstance(layer, FeedbackRNN) and layer.cell.residual
        ]
        if residual:
            raise ValueError(
                "Argument `quantization`='int16x8' for whole sequences cannot "
                f"take the residual layers {residual}: unrolled, their first "
                "step adds the zero initial state, a tensor of range [0, 0], "
                "which LiteRT's 16x8 ADD cannot run (the interpreter aborts). "
                "Export the step model (streaming=True), whose states are "
                "inputs."
            )
    samples = None
    if qat and not streaming:
        raise ValueError(
            f"Argument `streaming`=False: model {model.name!r} is "
            "quantization-aware, and its int8 file is the step model: pass "
            "streaming=True (LiteRT's int8 SCATTER_ND, which writes a "
            "whole-sequence loop's outputs, takes no quantized tensor)"
        )
    if qat:
        if representative_data is not None:
            # Only checked: the ranges are the model's, from training.
            _calibration.check_ranges(model, representative_data)
    elif quantization == "int8":
        if streaming:
            samples = _calibration.step_samples(plan, representative_data)
        else:
            samples = _calibration.sequence_samples(plan, representative_data)
    elif quantization == "int16x8":
        steps = (
            _calibration.sequence_samples(plan, representative_data)
            if unrolled
            else _calibration.step_samples(plan, representative_data)
        )
        samples = _calibration.with_headroom(steps, plan.input_names)
    if fused_lstm:
        content, function = _fused_content(plan, quantization, samples, batch_size)
    else:
        function = _concrete_function(
            plan, "step" if streaming else "sequence", unroll=unrolled
        )
        converter = configure(
            make_converter(function, plan.traced),
            function,
            quantization,
            samples,
            streaming,
            qat,
        )
        content = _convert(
            converter, function, quantization, samples, streaming, model, qat
        )
    if fused_lstm:  # converted from a SavedModel: its signature is written
        _fused_lstm.check_signature(
            content, SEQUENCE_SIGNATURE, *signature_names(function)
        )
        key = None
    else:
        key = STEP_SIGNATURE if streaming else SEQUENCE_SIGNATURE
    _atomic.write_file(path, finished(content, quantization, function, key))
    return path


def _signature_io(interpreter, key):
    runner = interpreter.get_signature_runner(key)
    return runner.get_input_details(), runner.get_output_details()


def _run_sequence(interpreter, named, repeats=3):
    inputs, outputs = _signature_io(interpreter, SEQUENCE_SIGNATURE)
    for name, value in named.items():
        fixed = inputs[name]["shape_signature"][0]
        if fixed > 0 and value.shape[0] != fixed:
            raise ValueError(
                f"Argument `inputs`: the LiteRT file has the fixed batch size "
                f"{fixed} (a fused LSTM, export_litert's fused_lstm=True), got "
                f"input {name!r} of shape {value.shape}; expected a batch of "
                f"{fixed}"
            )
        interpreter.resize_tensor_input(inputs[name]["index"], value.shape)
    interpreter.allocate_tensors()
    seconds = []
    for _ in range(repeats):
        # Each invoke is one whole sequence: a fused LSTM's states are
        # variable tensors, which keep the last invoke's final states.
        interpreter.reset_all_variables()
        for name, value in named.items():
            interpreter.set_tensor(inputs[name]["index"], value)
        start = time.perf_counter()
        interpreter.invoke()
        seconds.append(time.perf_counter() - start)
    result = {n: interpreter.get_tensor(d["index"]) for n, d in outputs.items()}
    return result, 1e3 * float(np.median(seconds))


def _run_stream(interpreter, named, plan):
    inputs, outputs = _signature_io(interpreter, STEP_SIGNATURE)
    batch = next(iter(named.values())).shape[0]
    start = plan.initial_state_fn({_trace.BATCH_SIZE: batch})
    states = {
        name: np.asarray(start[name], d["dtype"])
        for name, d in inputs.items()
        if name not in named
    }
    for name, value in named.items():
        interpreter.resize_tensor_input(inputs[name]["index"], value[:, 0].shape)
    for name, value in states.items():
        interpreter.resize_tensor_input(inputs[name]["index"], value.shape)
    interpreter.allocate_tensors()

    def load(feed):
        for name, value in feed.items():
            interpreter.set_tensor(inputs[name]["index"], np.ascontiguousarray(value))

    def read(_):
        return {n: interpreter.get_tensor(d["index"]) for n, d in outputs.items()}

    streamed = _common.stream(lambda _: interpreter.invoke(), named, states, load, read)
    return streamed.outputs, streamed.latency_ms


@public("keras_feedback.export.verify_litert")
def verify_litert(
    model: keras.Model,
    path: Union[str, os.PathLike],
    inputs: Any,
    tolerance: Optional[float] = None,
) -> Dict[str, Any]:
    """Runs a LiteRT file in ``ai_edge_litert``'s interpreter against ``model``.

    A whole-sequence file is resized to ``inputs``' batch and time and run
    once per repeat; a streaming file (signature ``"step"``) is run step by
    step from the model's initial states (zeros, or the states a stateful
    layer holds) and its outputs compared with the whole-sequence Keras
    outputs (every step, or the last one for a ``return_sequences=False``
    output).

    Args:
        model: the Keras model that was converted.
        path: the ``.tflite`` file.
        inputs: whole sequences: an array ``(batch, time, ...)``, a list in
            the model's input order or a dict by input name.
        tolerance: the max relative error allowed; None: that of a float
            file for the compute dtype of ``model``, as ``verify_saved_model``
            (1e-4, 1e-2 under ``mixed_float16``, 5e-2 under
            ``mixed_bfloat16``); a quantised file's error is the
            quantisation's (docs/deploy.md): pass its tolerance.

    Returns:
        A dict: ``max_abs_error``, ``max_rel_error`` (the absolute error over
        the largest |Keras output|), ``norm_rel_error`` (``||lite - keras|| /
        ||keras||`` over all elements), ``per_output`` (the three errors of
        each output, by name), ``nonfinite`` (where an output is NaN or Inf
        on either side, in words; such an output's errors are infinite and
        the file is never within tolerance), ``size_bytes``, ``streaming``,
        ``ops``
        (``litert_ops``), ``latency_ms`` (one invoke: a whole sequence, or
        one step) and ``step_latency_ms`` (per time step: the step invoke, or
        the sequence invoke over the number of steps), ``tolerance`` and
        ``within_tolerance`` (``max_rel_error`` at most ``tolerance``), and
        ``float_error``: for a quantization-aware ``model``
        (``keras_feedback.quantization``), whose int8 file the errors above
        compare with the model's own fake-quantised outputs, the three
        errors against its float form (``quantization.strip``); else
        None.
    """
    tolerance = _common.tolerance_for(model, tolerance)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Argument `path`: no LiteRT file at {path!r}")
    plan = _trace.ExportPlan(model, compute_dtype=None)
    named = plan.named_inputs(inputs)
    _common.check_finite_inputs(named)
    expected = plan.keras_outputs(named)
    interpreter = _interpreter(model_path=path)
    signatures = interpreter.get_signature_list()
    streaming = STEP_SIGNATURE in signatures
    steps = next(iter(named.values())).shape[1]
    if streaming:
        outputs, latency = _run_stream(interpreter, named, plan)
        compare = _saved_model.compare_steps
        tally = compare(outputs, expected)
        step_latency = latency
    else:
        if SEQUENCE_SIGNATURE not in signatures:
            raise ValueError(
                f"Argument `path`: {path!r} has neither a {SEQUENCE_SIGNATURE!r} "
                f"nor a {STEP_SIGNATURE!r} signature, got {sorted(signatures)}"
            )
        outputs, latency = _run_sequence(interpreter, named)
        compare = _compare_sequences
        tally = compare(outputs, expected)
        step_latency = latency / max(steps, 1)
    float_error = None
    if quantization_aware(model):
        # The file against the float model too: what QAT's rounding costs.
        float_plan = _trace.ExportPlan(strip_quantization(model), compute_dtype=None)
        float_tally = compare(outputs, float_plan.keras_outputs(named))
        float_error = {
            "max_abs_error": float_tally.max_abs,
            "max_rel_error": float_tally.max_rel,
            "norm_rel_error": float_tally.norm_rel,
        }
    return {
        "max_abs_error": tally.max_abs,
        "max_rel_error": tally.max_rel,
        "norm_rel_error": tally.norm_rel,
        "per_output": tally.per_output,
        "nonfinite": tally.nonfinite,
        "size_bytes": os.path.getsize(path),
        "streaming": streaming,
        "ops": litert_ops(path),
        "latency_ms": latency,
        "step_latency_ms": step_latency,
        "tolerance": tolerance,
        "within_tolerance": tally.within(tolerance),
        "float_error": float_error,
    }


def _compare_sequences(outputs, expected):
    tally = _common.ErrorTally()
    for name, reference in expected.items():
        tally.add(name, outputs[name], reference)
    return tally
