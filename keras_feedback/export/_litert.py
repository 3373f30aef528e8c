"""LiteRT (TFLite) export with builtin ops only, and its verification."""

import os
import re
import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf

from keras_feedback._api import public
from keras_feedback.export import _common
from keras_feedback.export import _saved_model
from keras_feedback.export import _trace

QUANTIZATIONS = ("float16", "dynamic_range", "int8")
SEQUENCE_SIGNATURE = _saved_model.SERVING_DEFAULT
STEP_SIGNATURE = _saved_model.STEP
# Calibration batches (time steps) fed to the int8 quantizer at most; longer
# representative data is subsampled evenly.
_MAX_CALIBRATION_BATCHES = 512


def _interpreter(model_path=None, model_content=None):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=model_path, model_content=model_content)


def _builtin_names():
    from ai_edge_litert import schema_py_generated as schema

    return {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }


@public("keras_feedback.export.litert_ops")
def litert_ops(model):
    """The operators of a LiteRT model, in all of its subgraphs.

    Args:
        model: path of a ``.tflite`` file, or its content as bytes.

    Returns:
        Sorted list of operator names: builtin ops by their schema name
        (``"WHILE"``, ``"FULLY_CONNECTED"``), custom ops by their custom code
        (a Flex op reads ``"Flex<TF op>"``).
    """
    from ai_edge_litert import schema_py_generated as schema

    if not isinstance(model, (bytes, bytearray)):
        with open(model, "rb") as f:
            model = f.read()
    root = schema.Model.GetRootAsModel(model, 0)
    names = _builtin_names()
    codes = []
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            codes.append(code.CustomCode().decode())
        else:
            codes.append(names.get(builtin, f"BUILTIN_{builtin}"))
    used = set()
    for g in range(root.SubgraphsLength()):
        subgraph = root.Subgraphs(g)
        for o in range(subgraph.OperatorsLength()):
            used.add(codes[subgraph.Operators(o).OpcodeIndex()])
    return sorted(used)


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
    layers = [
        layer for layer in _common.nested_layers(model) if layer is not model
    ]
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
        ours = ours or isinstance(layer, _common.FeedbackRNN)
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


def _check_quantization(quantization, representative_data):
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Argument `quantization` must be None or one of {QUANTIZATIONS}, "
            f"got {quantization!r}"
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "Argument `representative_data` is required for "
            "quantization='int8' (full integer quantization calibrates the "
            "range of every tensor on it), got None"
        )


def _calibration_batches(plan, representative_data):
    """``representative_data`` as a list of batches of named sequences."""
    if callable(representative_data):
        batches = list(representative_data())
    else:
        batches = [representative_data]
    if not batches:
        raise ValueError("Argument `representative_data` holds no data")
    return [plan.named_inputs(b, argument="representative_data") for b in batches]


def _step_samples(plan, representative_data):
    """Calibration inputs of the step model: each step of each sequence with
    the states the model itself reaches there."""
    step = tf.function(plan.step_fn, input_signature=plan.signature("step"))
    samples = []
    with _common.export_mode(plan.model):
        for named in _calibration_batches(plan, representative_data):
            batch = next(iter(named.values())).shape[0]
            states = plan.initial_state_fn({_trace.BATCH_SIZE: batch})
            steps = next(iter(named.values())).shape[1]
            for t in range(steps):
                feed = {n: tf.constant(v[:, t]) for n, v in named.items()}
                samples.append(
                    {k: np.asarray(v) for k, v in {**feed, **states}.items()}
                )
                result = step({**feed, **states})
                states = {name: result[name] for name in plan.state_specs}
    stride = -(-len(samples) // _MAX_CALIBRATION_BATCHES)
    return samples[::stride]


def _sequence_samples(plan, representative_data):
    """Calibration inputs of the whole-sequence model: the batches as given."""
    batches = _calibration_batches(plan, representative_data)
    return batches[:: -(-len(batches) // _MAX_CALIBRATION_BATCHES)]


def _concrete_function(plan, kind):
    functions = {"sequence": plan.sequence_fn, "step": plan.step_fn}
    with _common.export_mode(plan.model):
        function = tf.function(
            functions[kind], input_signature=plan.signature(kind), autograph=False
        )
        return function.get_concrete_function()


def _converter(plan, concrete_function, quantization, samples, streaming):
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [concrete_function], plan.model
    )
    # Freeze the traced function directly rather than through a SavedModel:
    # 3-5x faster, and it also freezes the variables the WHILE body reads.
    converter.experimental_lower_to_saved_model = False
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        names = _flat_names(concrete_function.structured_input_signature[0][0])
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


# The ops a whole-sequence int8 model keeps in float32 (see below).
_INT8_SEQUENCE_FLOAT_OPS = ("SCATTER_ND", "CONCATENATION", "SELECT", "SELECT_V2")


def _quantize_sequence_int8(converter, samples, names):
    """The whole-sequence model in int8, but the ops that only move data.

    The recurrence writes each step's output into the output sequence with
    ``tf.tensor_scatter_nd_update``, which LiteRT runs as SCATTER_ND ops on a
    one-hot mask. An int8 SCATTER_ND fills the positions it does not write
    with the integer 0, which is the real 0 only for a zero point of 0; the
    quantizer gives the mask (values in [0, 1]) the zero point -128, so the
    mask reads 0.5 where it should read 0 and every write halves the outputs
    written before (measured: only the last step survived, relative error
    about 1). Those ops only move data: in float32 they cost no precision.
    The MLIR quantizer (the calibration quantizer does not support WHILE)
    also requires one scale for all the inputs of a concatenation or a
    select (masked steps keep their states), which the fixed output scales
    of tanh and sigmoid do not share: those ops stay float32 too. The
    quantizer's op denylist is reached through the public
    ``tf.lite.experimental.QuantizationDebugger``.
    """

    def dataset():
        return ([sample[name] for name in names] for sample in samples)

    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=dataset,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=list(_INT8_SEQUENCE_FLOAT_OPS)
        ),
    )
    return debugger.get_nondebug_quantized_model()


# Ops whose hybrid kernel (int8 constant weights, float32 input) also rounds
# its float input to int8 at every call. In a recurrence that rounding is
# repeated at every step and compounds through the states.
_HYBRID_OPS = frozenset(
    """BATCH_MATMUL CONV_2D CONV_3D DEPTHWISE_CONV_2D FULLY_CONNECTED
    TRANSPOSE_CONV""".split()
)


def _dequantize_weights(content):
    """``content`` with every int8 weight of a hybrid op behind a DEQUANTIZE.

    The dynamic-range converter stores the kernels in int8 (one scale per
    output channel) and picks hybrid kernels that quantise the activations
    on the fly. Here each such weight goes through a builtin DEQUANTIZE op
    instead, so that the op computes in float32: the file keeps the int8
    weights, and LiteRT dequantises a constant input once and keeps the
    result (as it does for float16 weights), so the model runs the float32
    math on int8-rounded weights.

    Returns:
        The new model's content.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    names = _builtin_names()
    codes = [
        names.get(max(code.builtinCode, code.deprecatedBuiltinCode))
        for code in model.operatorCodes
    ]
    for graph in model.subgraphs:
        routed = {}  # int8 weight tensor -> its float32 copy
        added = []
        for op in graph.operators or []:
            if codes[op.opcodeIndex] not in _HYBRID_OPS or (
                graph.tensors[op.outputs[0]].type != schema.TensorType.FLOAT32
            ):
                continue
            inputs = list(op.inputs)
            for position, index in enumerate(inputs):
                if index < 0 or not _is_int8_constant(model, graph.tensors[index]):
                    continue
                if index not in routed:
                    tensor = graph.tensors[index]
                    result = schema.TensorT()
                    result.shape = list(tensor.shape)
                    result.type = schema.TensorType.FLOAT32
                    result.buffer = 0
                    result.name = bytes(tensor.name) + b"/dequantized"
                    graph.tensors.append(result)
                    routed[index] = len(graph.tensors) - 1
                    dequantize = schema.OperatorT()
                    dequantize.opcodeIndex = _operator_code(
                        model, codes, "DEQUANTIZE", _dequantize_version(tensor)
                    )
                    dequantize.inputs = [index]
                    dequantize.outputs = [routed[index]]
                    added.append(dequantize)
                inputs[position] = routed[index]
            op.inputs = inputs
        if added:  # they read constants only: they can run first
            graph.operators = added + list(graph.operators)
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _is_int8_constant(model, tensor):
    from ai_edge_litert import schema_py_generated as schema

    data = model.buffers[tensor.buffer].data
    return tensor.type == schema.TensorType.INT8 and data is not None and len(data) > 0


def _dequantize_version(tensor):
    """The DEQUANTIZE operator version that reads ``tensor``: 2 for int8,
    5 for int8 with one scale per channel (LiteRT's op versioning)."""
    scales = tensor.quantization.scale if tensor.quantization else None
    return 5 if scales is not None and len(scales) > 1 else 2


def _operator_code(model, codes, name, version):
    """Index of the operator code of builtin ``name`` at ``version`` or
    later, added or raised as needed."""
    from ai_edge_litert import schema_py_generated as schema

    if name in codes:
        code = model.operatorCodes[codes.index(name)]
        code.version = max(code.version, version)
        return codes.index(name)
    value = getattr(schema.BuiltinOperator, name)
    code = schema.OperatorCodeT()
    code.builtinCode = value
    # The deprecated one-byte field holds the codes below 127.
    code.deprecatedBuiltinCode = min(value, 127)
    code.version = version
    model.operatorCodes.append(code)
    codes.append(name)
    return len(codes) - 1


def _flat_names(structure):
    """Names of a dict's values in the order ``tf.nest.flatten`` gives them."""
    names = list(structure)
    return tf.nest.flatten({name: name for name in names})


def _with_signature(content, key, input_names, output_names):
    """``content`` with a signature ``key`` naming its inputs and outputs.

    The frozen conversion path writes none; the names are those of the traced
    function's (flattened) inputs and outputs, in the subgraph's order.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    graph = model.subgraphs[0]
    if len(graph.inputs) != len(input_names) or len(graph.outputs) != len(
        output_names
    ):
        raise ValueError(
            f"LiteRT conversion gave {len(graph.inputs)} inputs and "
            f"{len(graph.outputs)} outputs, expected {input_names} and "
            f"{output_names}"
        )
    for name, index in zip(input_names, graph.inputs):
        tensor_name = graph.tensors[index].name.decode()
        if name not in tensor_name:
            raise ValueError(
                f"LiteRT input {tensor_name!r} does not carry the name {name!r}"
            )

    def tensor_map(name, index):
        entry = schema.TensorMapT()
        entry.name = name
        entry.tensorIndex = int(index)
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey = key
    signature.subgraphIndex = 0
    signature.inputs = [tensor_map(n, i) for n, i in zip(input_names, graph.inputs)]
    signature.outputs = [
        tensor_map(n, i) for n, i in zip(output_names, graph.outputs)
    ]
    model.signatureDefs = [signature]
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@public("keras_feedback.export.export_litert")
def export_litert(
    model,
    path,
    quantization=None,
    representative_data=None,
    streaming=False,
    overwrite=False,
):
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

    Quantisation, measured on the 24 ``Input -> Feedback -> Dense`` models of
    the test suite (32 units, 7 steps; max error over the largest |Keras
    output|): ``"float16"`` <= 1e-3; ``"dynamic_range"`` 1e-3 to 1.3e-2 (the
    file computes exactly in float32 on int8-rounded weights: all of that is
    the rounding of the weights); ``"int8"`` 2e-2 to 0.30, up to 0.39 for
    residual cores, whose states grow over the sequence.

    Args:
        model: a built functional or Sequential Keras model.
        path: the ``.tflite`` file to write.
        quantization: None (float32); ``"float16"`` (weights stored as
            float16); ``"dynamic_range"`` (the kernels of 1024 weights or
            more stored in int8 with one scale per output channel; LiteRT
            dequantises them once when it loads the file, so every op
            computes in float32 and the weights take float32 memory at run
            time, as with float16); or ``"int8"`` (full integer, needs
            ``representative_data``: every op computes in int8, with
            float32 inputs and outputs; in the whole-sequence model the loop
            carries its states in float32 between steps, and its
            concatenations and output writes (SCATTER_ND) stay float32).
        representative_data: example sequences for int8 calibration, as long
            as those the model will see (beyond the calibrated range a
            growing state saturates): an array ``(batch, time, ...)`` (a list
            or dict of arrays for a model with several inputs), or a callable
            returning an iterable of such batches. The whole-sequence model
            is calibrated on them; the step model on every step of them,
            with the states the model reaches there.
        streaming: write the step model rather than the whole-sequence one.
        overwrite: replace ``path`` when it exists.

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
    _check_quantization(quantization, representative_data)
    path = os.fspath(path)
    _common.check_target(path, overwrite, "path")
    plan = _trace.ExportPlan(model)
    if streaming and not plan.streamable:
        raise ValueError(
            f"Argument `streaming`=True needs a model that runs one step at a "
            f"time; {model.name!r} does not: {plan.step_problem_message()}"
        )
    samples = None
    if quantization == "int8":
        if streaming:
            samples = _step_samples(plan, representative_data)
        else:
            samples = _sequence_samples(plan, representative_data)
    kind = "step" if streaming else "sequence"
    function = _concrete_function(plan, kind)
    converter = _converter(plan, function, quantization, samples, streaming)
    try:
        with warnings.catch_warnings():
            # The calibration quantizer's note that float inputs keep no
            # range: intended, the int8 model has float32 inputs.
            warnings.filterwarnings(
                "ignore", message="Statistics for quantized inputs were expected"
            )
            # The debugger's own (unused) interpreter is tf.lite's.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter")
            if quantization == "int8" and not streaming:
                content = _quantize_sequence_int8(
                    converter,
                    samples,
                    _flat_names(function.structured_input_signature[0][0]),
                )
            else:
                content = converter.convert()
    except Exception as error:  # the converter raises ConverterError
        raise _conversion_error(error, model) from None
    if quantization == "dynamic_range":
        content = _dequantize_weights(content)
    content = _with_signature(
        content,
        STEP_SIGNATURE if streaming else SEQUENCE_SIGNATURE,
        _flat_names(function.structured_input_signature[0][0]),
        _flat_names(function.structured_outputs),
    )
    not_builtin = [
        op for op in litert_ops(content) if not re.fullmatch(r"[A-Z0-9_]+", op)
    ]
    if not_builtin:
        raise ValueError(
            f"Argument `model`: its LiteRT conversion contains the non-builtin "
            f"ops {not_builtin}, which the stock LiteRT interpreter does not run"
        )
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".partial-", suffix=".tflite", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


def _signature_io(interpreter, key):
    runner = interpreter.get_signature_runner(key)
    return runner.get_input_details(), runner.get_output_details()


def _run_sequence(interpreter, named, repeats=3):
    inputs, outputs = _signature_io(interpreter, SEQUENCE_SIGNATURE)
    for name, value in named.items():
        interpreter.resize_tensor_input(inputs[name]["index"], value.shape)
    interpreter.allocate_tensors()
    seconds = []
    for _ in range(repeats):
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
    steps = next(iter(named.values())).shape[1]
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
    step_outputs = []
    seconds = []
    for t in range(steps):
        for name, value in named.items():
            step = np.ascontiguousarray(value[:, t])
            interpreter.set_tensor(inputs[name]["index"], step)
        for name, value in states.items():
            interpreter.set_tensor(inputs[name]["index"], value)
        start = time.perf_counter()
        interpreter.invoke()
        seconds.append(time.perf_counter() - start)
        result = {n: interpreter.get_tensor(d["index"]) for n, d in outputs.items()}
        states = {name: result[name] for name in states}
        step_outputs.append({k: v for k, v in result.items() if k not in states})
    latency = 1e3 * float(np.median(seconds[1:] if len(seconds) > 1 else seconds))
    return step_outputs, latency


@public("keras_feedback.export.verify_litert")
def verify_litert(model, path, inputs):
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

    Returns:
        A dict: ``max_abs_error``, ``max_rel_error`` (the absolute error over
        the largest |Keras output|), ``norm_rel_error`` (``||lite - keras|| /
        ||keras||`` over all elements), ``per_output`` (the three errors of
        each output, by name), ``size_bytes``, ``streaming``, ``ops``
        (``litert_ops``), ``latency_ms`` (one invoke: a whole sequence, or
        one step) and ``step_latency_ms`` (per time step: the step invoke, or
        the sequence invoke over the number of steps).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Argument `path`: no LiteRT file at {path!r}")
    plan = _trace.ExportPlan(model)
    named = plan.named_inputs(inputs)
    expected = plan.keras_outputs(named)
    interpreter = _interpreter(model_path=path)
    signatures = interpreter.get_signature_list()
    streaming = STEP_SIGNATURE in signatures
    steps = next(iter(named.values())).shape[1]
    if streaming:
        outputs, latency = _run_stream(interpreter, named, plan)
        tally = _saved_model.compare_steps(outputs, expected)
        step_latency = latency
    else:
        if SEQUENCE_SIGNATURE not in signatures:
            raise ValueError(
                f"Argument `path`: {path!r} has neither a {SEQUENCE_SIGNATURE!r} "
                f"nor a {STEP_SIGNATURE!r} signature, got {sorted(signatures)}"
            )
        result, latency = _run_sequence(interpreter, named)
        tally = _common.ErrorTally()
        for name, reference in expected.items():
            tally.add(name, result[name], reference)
        step_latency = latency / max(steps, 1)
    return {
        "max_abs_error": tally.max_abs,
        "max_rel_error": tally.max_rel,
        "norm_rel_error": tally.norm_rel,
        "per_output": tally.per_output,
        "size_bytes": os.path.getsize(path),
        "streaming": streaming,
        "ops": litert_ops(path),
        "latency_ms": latency,
        "step_latency_ms": step_latency,
    }
