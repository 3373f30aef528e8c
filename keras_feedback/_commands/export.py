"""``keras-feedback export``: SavedModel and LiteRT export, verified.

Loads a ``.keras`` model, writes a SavedModel in TF Serving's layout and/or a
LiteRT file, reloads each, runs it on random inputs (a seeded batch of
``--time`` steps) and prints a table of the parity errors against the Keras
model, the sizes and the latency per time step. Exits with status 1 when an
export is further from Keras than its tolerance.
"""

import numpy as np

from keras_feedback import _commands

HELP = (
    "Export a .keras model as a SavedModel (TF Serving: serving_default, "
    "step, initial_state) and/or a LiteRT file, and verify both."
)

QUANTIZATIONS = ("float16", "dynamic_range", "int8", "int16x8")
# Max error relative to the largest |Keras output| an export may have: float
# exports run the same float32 math; float16 rounds the weights to float16,
# dynamic range to int8 (per output channel, computed in float32; the
# errors measured are in docs/deploy.md). int8 is
# reported, not checked, unless --tolerance is given.
TOLERANCES = {
    None: 1e-4,
    "float16": 1e-2,
    "dynamic_range": 1.5e-2,
    "int8": None,
    "int16x8": None,  # the int8 weights' rounding, model-dependent (README)
}


def add_arguments(parser):
    parser.add_argument("model", help="the .keras model file to export")
    parser.add_argument(
        "--saved-model",
        metavar="DIR",
        help="TF Serving base folder: writes DIR/VERSION/ (a SavedModel)",
    )
    parser.add_argument(
        "--version",
        type=_commands.positive_int,
        default=1,
        help="SavedModel version folder (1)",
    )
    parser.add_argument("--litert", metavar="FILE", help="the .tflite file to write")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        help="LiteRT quantisation (int8 and int16x8 need --representative-data; "
        "int16x8 of whole sequences needs a model with a fixed time axis)",
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="write the LiteRT step model (explicit states) instead of the "
        "whole-sequence one",
    )
    parser.add_argument(
        "--fused-lstm",
        action="store_true",
        help="run each Keras-compatible LSTM layer (core lstm, feedback_units "
        "0) as LiteRT's fused UNIDIRECTIONAL_SEQUENCE_LSTM op instead of a "
        "WHILE loop: faster in float, but the file's batch is fixed to --batch "
        "and its states carry over between invokes (reset_all_variables())",
    )
    parser.add_argument(
        "--representative-data",
        metavar="FILE",
        help="int8 calibration sequences: a .npy array (batch, time, ...) or "
        "a .npz with one array per model input",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs"
    )
    parser.add_argument(
        "--batch",
        type=_commands.positive_int,
        default=2,
        help="batch of the check inputs (2), and the fixed batch of a "
        "--fused-lstm file",
    )
    parser.add_argument(
        "--time",
        type=_commands.positive_int,
        default=16,
        help="time steps of the check inputs (16)",
    )
    parser.add_argument(
        "--seed",
        type=_commands.non_negative_int,
        default=0,
        help="check inputs seed (0)",
    )
    parser.add_argument(
        "--tolerance",
        type=_commands.positive_float,
        help="max error relative to the largest |Keras output| allowed for "
        "every export (default: 1e-4 float, 1e-2 float16, 1.5e-2 dynamic "
        "range, int8 not checked; at least 1e-2 for a mixed_float16 and "
        "5e-2 for a mixed_bfloat16 model)",
    )


def check_inputs(plan, batch, time, seed):
    """Seeded inputs for every model input: normal floats, prefix masks for
    boolean inputs, small integers (token ids) for integer inputs."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, spec in plan.input_specs.items():
        shape = [batch] + [time if d is None else d for d in spec.shape[1:]]
        dtype = spec.dtype.as_numpy_dtype
        if spec.dtype.is_bool:
            lengths = rng.integers(1, shape[1] + 1, size=batch)
            value = np.arange(shape[1])[None, :] < lengths[:, None]
            value = np.broadcast_to(
                value.reshape(value.shape + (1,) * (len(shape) - 2)), shape
            )
        elif spec.dtype.is_integer:
            value = rng.integers(0, 2, size=shape)
        else:
            value = rng.normal(size=shape)
        inputs[name] = np.ascontiguousarray(value, dtype=dtype)
    return inputs


def _load_representative(path):
    if path is None:
        return None
    return _commands.load_arrays("--representative-data", path)


def _size(nbytes):
    for unit in ("B", "KiB", "MiB"):
        if nbytes < 1024 or unit == "MiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024


def _number(value, spec=".2e"):
    return "-" if value is None else format(value, spec)


def format_table(rows):
    """Rows of dicts as a fixed-width text table."""
    columns = [
        ("export", "export"),
        ("path", "path"),
        ("size", "size"),
        ("max_abs_error", "max abs err"),
        ("max_rel_error", "max rel err"),
        ("tolerance", "tolerance"),
        ("step_latency_ms", "ms/step"),
        ("status", "status"),
    ]
    cells = [[title for _, title in columns]]
    for row in rows:
        cells.append(
            [
                row["export"],
                row["path"],
                _size(row["size_bytes"]),
                _number(row["max_abs_error"]),
                _number(row["max_rel_error"]),
                _number(row["tolerance"], ".0e"),
                _number(row["step_latency_ms"], ".3f"),
                row["status"],
            ]
        )
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _status(relative, tolerance):
    if relative is None or not np.isfinite(relative):
        return "FAIL"  # NaN or Inf in an output: never OK, even when reported
    if tolerance is None:
        return "reported"
    return "OK" if relative <= tolerance else "FAIL"


def _check_arguments(args):
    """Every check that needs no TensorFlow, before anything is loaded."""
    if not args.saved_model and not args.litert:
        raise _commands.UsageError(
            "give --saved-model DIR and/or --litert FILE (nothing to export)"
        )
    if args.quantize and not args.litert:
        raise _commands.UsageError("--quantize applies to --litert FILE only")
    if args.streaming and not args.litert:
        raise _commands.UsageError("--streaming applies to --litert FILE only")
    if args.fused_lstm and (not args.litert or args.streaming):
        raise _commands.UsageError(
            "--fused-lstm applies to the whole-sequence --litert FILE only "
            "(not with --streaming)"
        )
    if args.representative_data and args.quantize not in ("int8", "int16x8"):
        raise _commands.UsageError(
            "--representative-data calibrates --quantize int8 or int16x8 only, "
            f"got --quantize {args.quantize}"
        )
    _commands.input_file("model", args.model)
    if args.saved_model:
        _commands.output_folder("--saved-model", args.saved_model)
    if args.litert:
        _commands.output_file("--litert", args.litert)


def run(args):
    _check_arguments(args)
    representative = _load_representative(args.representative_data)
    model = _commands.load_keras_model("model", args.model, compile=False)
    return _run(args, model, representative)


def _run(args, model, representative):
    from keras_feedback import export
    from keras_feedback import quantization
    from keras_feedback.export import _trace

    if args.litert and quantization.is_quantized(model):
        if args.quantize != "int8" or not args.streaming:
            raise _commands.UsageError(
                f"model {args.model!r} is quantization-aware (trained with "
                "--qat-epochs): its LiteRT file is the int8 step model; pass "
                "--quantize int8 --streaming (no --representative-data needed)"
            )

    plan = _trace.ExportPlan(model)
    inputs = check_inputs(plan, args.batch, args.time, args.seed)
    rows = []
    nonfinite = []
    if args.saved_model:
        path = export.export_saved_model(
            model, args.saved_model, version=args.version, overwrite=args.overwrite
        )
        report = export.verify_saved_model(
            model, args.saved_model, inputs, version=args.version
        )
        nonfinite += [f"SavedModel {p}" for p in report["nonfinite"]]
        # The default scales with the model's compute dtype (verify_*).
        tolerance = report["tolerance"] if args.tolerance is None else args.tolerance
        steps = inputs[plan.input_names[0]].shape[1]
        rows.append(
            {
                "export": "SavedModel serving_default",
                "path": path,
                "size_bytes": report["size_bytes"],
                "max_abs_error": report["serving_max_abs_error"],
                "max_rel_error": report["serving_max_rel_error"],
                "tolerance": tolerance,
                "step_latency_ms": report["serving_latency_ms"] / steps,
                "status": _status(report["serving_max_rel_error"], tolerance),
            }
        )
        if report["step_max_abs_error"] is not None:
            rows.append(
                {
                    "export": "SavedModel step",
                    "path": path,
                    "size_bytes": report["size_bytes"],
                    "max_abs_error": report["step_max_abs_error"],
                    "max_rel_error": report["step_max_rel_error"],
                    "tolerance": tolerance,
                    "step_latency_ms": report["step_latency_ms"],
                    "status": _status(report["step_max_rel_error"], tolerance),
                }
            )
    if args.litert:
        path = export.export_litert(
            model,
            args.litert,
            quantization=args.quantize,
            representative_data=representative,
            streaming=args.streaming,
            overwrite=args.overwrite,
            fused_lstm=args.fused_lstm,
            batch_size=args.batch if args.fused_lstm else None,
        )
        report = export.verify_litert(model, path, inputs)
        nonfinite += [f"LiteRT {p}" for p in report["nonfinite"]]
        tolerance = args.tolerance
        if tolerance is None and TOLERANCES[args.quantize] is not None:
            tolerance = max(TOLERANCES[args.quantize], report["tolerance"])
        kind = "step" if args.streaming else "sequence"
        if args.fused_lstm:
            kind += " fused-lstm"
        rows.append(
            {
                "export": f"LiteRT {kind} {args.quantize or 'float32'}",
                "path": path,
                "size_bytes": report["size_bytes"],
                "max_abs_error": report["max_abs_error"],
                "max_rel_error": report["max_rel_error"],
                "tolerance": tolerance,
                "step_latency_ms": report["step_latency_ms"],
                "status": _status(report["max_rel_error"], tolerance),
            }
        )
        if report["float_error"] is not None:
            # A QAT model's file: the errors above are against its own
            # fake-quantised outputs; what the rounding costs against the
            # float model, reported.
            rows.append(
                {
                    "export": f"LiteRT {kind} int8 vs float model",
                    "path": path,
                    "size_bytes": report["size_bytes"],
                    "max_abs_error": report["float_error"]["max_abs_error"],
                    "max_rel_error": report["float_error"]["max_rel_error"],
                    "tolerance": None,
                    "step_latency_ms": report["step_latency_ms"],
                    "status": _status(report["float_error"]["max_rel_error"], None),
                }
            )
    print(format_table(rows))
    print(
        f"checked on {args.batch} random sequences of {args.time} steps "
        f"(seed {args.seed}); errors relative to the largest |Keras output|"
    )
    for problem in nonfinite:
        print(f"not finite: {problem}")
    return 1 if any(row["status"] == "FAIL" for row in rows) else 0
