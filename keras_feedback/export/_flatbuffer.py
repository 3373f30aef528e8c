"""Reading and rewriting the flatbuffer of a converted LiteRT model.

``litert_ops`` lists a file's operators; ``with_signature`` adds the
signature the frozen conversion path does not write; ``dequantize_weights``
routes the int8 weights of hybrid ops through DEQUANTIZE ops.
"""

import os
from typing import List
from typing import Union

from keras_feedback._api import public


def _builtin_names():
    from ai_edge_litert import schema_py_generated as schema

    return {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }


@public("keras_feedback.export.litert_ops")
def litert_ops(model: Union[str, os.PathLike, bytes, bytearray]) -> List[str]:
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


# Ops whose hybrid kernel (int8 constant weights, float32 input) also rounds
# its float input to int8 at every call. In a recurrence that rounding is
# repeated at every step and compounds through the states.
_HYBRID_OPS = frozenset(
    """BATCH_MATMUL CONV_2D CONV_3D DEPTHWISE_CONV_2D FULLY_CONNECTED
    TRANSPOSE_CONV UNIDIRECTIONAL_SEQUENCE_LSTM""".split()
)


def dequantize_weights(content):
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


def with_signature(content, key, input_names, output_names):
    """``content`` with a signature ``key`` naming its inputs and outputs.

    The frozen conversion path writes none; the names are those of the traced
    function's (flattened) inputs and outputs, in the subgraph's order.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    graph = model.subgraphs[0]
    if len(graph.inputs) != len(input_names) or len(graph.outputs) != len(output_names):
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
    signature.outputs = [tensor_map(n, i) for n, i in zip(output_names, graph.outputs)]
    model.signatureDefs = [signature]
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def widen_loop_weights(content):
    """``content`` with the weights of its WHILE loops widened to float32
    outside the loops, by ops LiteRT's XNNPACK delegate leaves alone.

    Every DEQUANTIZE of a constant in a WHILE body moves to the graph that
    runs the loop, and the body reads the widened weights as loop inputs it
    passes through unchanged (read-only WHILE inputs, which LiteRT shares
    with the outer graph rather than copying). Then, in a file with a loop,
    every DEQUANTIZE of a constant becomes a CAST to float32: of a float16
    weight alone, of an int8 weight followed by a MUL by its scales
    (``_widen_constants``).

    Why: XNNPACK, which LiteRT applies by default, takes a DEQUANTIZE of a
    constant as its own (it dequantizes the weights itself), and in a file
    with a WHILE loop that goes wrong at times (one verification in a few,
    in one process; with CASTs, none: docs/deploy.md, D2). The
    price is speed: the loop's matmuls read weights that XNNPACK has not
    packed in advance, and the weights are widened at every invoke.

    Returns:
        The new model's content (``content`` itself where it has no loop).
    """
    import copy

    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    names = _builtin_names()
    codes = [
        names.get(max(code.builtinCode, code.deprecatedBuiltinCode))
        for code in model.operatorCodes
    ]
    loops = [
        (graph, op)
        for graph in model.subgraphs
        for op in graph.operators or []
        if codes[op.opcodeIndex] == "WHILE"
    ]
    if not loops:
        return content
    bodies = [op.builtinOptions.bodySubgraphIndex for _, op in loops]
    for graph, op in loops:
        options = op.builtinOptions
        if bodies.count(options.bodySubgraphIndex) > 1:
            continue  # a body shared by two loops keeps its own weights
        body = model.subgraphs[options.bodySubgraphIndex]
        cond = model.subgraphs[options.condSubgraphIndex]
        hoisted = [
            inner
            for inner in body.operators or []
            if codes[inner.opcodeIndex] == "DEQUANTIZE"
            and _is_constant(model, body.tensors[inner.inputs[0]])
            and inner.outputs[0] not in body.outputs
        ]
        for inner in hoisted:
            body.operators.remove(inner)
            value = body.tensors[inner.outputs[0]]
            weights = copy.deepcopy(body.tensors[inner.inputs[0]])  # same buffer
            graph.tensors.append(weights)
            dequantize = copy.deepcopy(inner)
            dequantize.inputs = [len(graph.tensors) - 1]
            graph.tensors.append(_float_like(schema, value, b"/hoisted"))
            dequantize.outputs = [len(graph.tensors) - 1]
            graph.operators.insert(graph.operators.index(op), dequantize)
            graph.tensors.append(_float_like(schema, value, b"/passed"))
            op.inputs = [*op.inputs, dequantize.outputs[0]]
            op.outputs = [*op.outputs, len(graph.tensors) - 1]
            body.inputs = [*body.inputs, inner.outputs[0]]
            body.outputs = [*body.outputs, inner.outputs[0]]
            cond.tensors.append(_float_like(schema, value, b"/unused"))
            cond.inputs = [*cond.inputs, len(cond.tensors) - 1]
    _widen_constants(model, codes)
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# LiteRT's versions of CAST by the type they read, and the runtime each
# needs (tflite/converter/tools/versioning/op_version.cc, runtime_version.cc).
_CAST_VERSION = {"FLOAT16": (5, "2.12.0"), "INT8": (3, "2.8.0")}


def _widen_constants(model, codes):
    """Replaces, in place, each DEQUANTIZE of a constant by a CAST to
    float32: of a float16 weight alone; of an int8 weight followed by a MUL
    by its scales (one per channel, zero points 0)."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    kinds = {schema.TensorType.FLOAT16: "FLOAT16", schema.TensorType.INT8: "INT8"}
    runtime = None
    for graph in model.subgraphs:
        for op in list(graph.operators or []):
            source = graph.tensors[op.inputs[0]] if len(op.inputs) else None
            kind = kinds.get(getattr(source, "type", None))
            if codes[op.opcodeIndex] != "DEQUANTIZE" or kind is None:
                continue
            quantization = source.quantization
            if not _is_constant(model, source) or (
                kind == "INT8" and np.any(np.asarray(quantization.zeroPoint) != 0)
            ):
                continue
            version, needs = _CAST_VERSION[kind]
            runtime = max(runtime or needs, needs, key=_parsed_version)
            op.opcodeIndex = _operator_code(model, codes, "CAST", version)
            op.builtinOptionsType = schema.BuiltinOptions.CastOptions
            op.builtinOptions = schema.CastOptionsT()
            op.builtinOptions.inDataType = source.type
            op.builtinOptions.outDataType = schema.TensorType.FLOAT32
            if kind == "FLOAT16":
                continue
            value = graph.tensors[op.outputs[0]]
            graph.tensors.append(_float_like(schema, value, b"/widened"))
            widened = len(graph.tensors) - 1
            scales = np.asarray(quantization.scale, np.float32)
            shape = [1] * len(source.shape)
            if scales.size > 1:
                shape[quantization.quantizedDimension] = scales.size
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(scales.tobytes(), np.uint8)
            model.buffers.append(buffer)
            graph.tensors.append(_float_like(schema, value, b"/scales"))
            graph.tensors[-1].shape = shape
            graph.tensors[-1].buffer = len(model.buffers) - 1
            scale = schema.OperatorT()
            scale.opcodeIndex = _operator_code(model, codes, "MUL", 1)
            scale.inputs = [widened, len(graph.tensors) - 1]
            scale.outputs = list(op.outputs)
            scale.builtinOptionsType = schema.BuiltinOptions.MulOptions
            scale.builtinOptions = schema.MulOptionsT()
            op.outputs = [widened]
            graph.operators.insert(graph.operators.index(op) + 1, scale)
    if runtime is not None:
        _require_runtime(model, runtime)


def _parsed_version(text):
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def _require_runtime(model, version):
    """Raises the ``min_runtime_version`` metadata of ``model`` to ``version``
    (in place: the converter pads that string to 16 bytes)."""
    import numpy as np

    for entry in model.metadata or []:
        if entry.name != b"min_runtime_version":
            continue
        buffer = model.buffers[entry.buffer]
        old = bytes(np.asarray(buffer.data, np.uint8)).rstrip(b"\0").decode()
        if _parsed_version(old) < _parsed_version(version):
            size = max(len(buffer.data), len(version))
            buffer.data = np.frombuffer(version.encode().ljust(size, b"\0"), np.uint8)


def _is_constant(model, tensor):
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def _float_like(schema, tensor, suffix):
    """A new float32 tensor of ``tensor``'s shape, holding no data."""
    result = schema.TensorT()
    result.shape = list(tensor.shape)
    result.type = schema.TensorType.FLOAT32
    result.buffer = 0
    result.name = bytes(tensor.name) + suffix
    return result
