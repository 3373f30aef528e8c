"""Measures every LiteRT mode on the test matrix and on a 128-unit LSTM.

    python export/quantization_table.py [OUT.json]
    python export/quantization_table.py --fused-lstm [OUT.json]

Writes the figures of docs/deploy.md's quantisation tables: for each of
the 24 core x attention x residual x output-projection models of
tests/test_export_matrix.py (32 units, 32 features, calibrated on 16
sequences of 7 steps, checked on 5 fresh ones) the max error relative to
the largest |Keras output| and the file size of every mode, and the error
of the same model with its weights rounded to int8 in Keras (the share of
the error no activation format removes); then size and latency per step of
an lstm of 128 units, 64 features (batch 1, 64 steps). Takes minutes.

``--fused-lstm`` measures instead the WHILE-loop and the fused
(``fused_lstm=True``) whole-sequence files of two Keras-compatible LSTMs
(``feedback_units=0``; 128 units on 32 features, 16 units on 8) in every
mode both have: ms per sequence of 100 steps at batch 1 and 8 (the median
of 20 invokes after 3, with XNNPACK), file size (of the batch-1 file) and
the max error relative to the largest |Keras output| on 8 fresh sequences
(calibrated on 16).
"""

import itertools
import os
import sys
import tempfile
import time

import keras
import numpy as np

import keras_feedback
from keras_feedback import export

COMBINATIONS = [
    {"core": core, "attention": attention, "residual": residual, "output_units": out}
    for core, attention, residual, out in itertools.product(
        ("simple", "gru", "lstm"), (False, True), (False, True), (None, 3)
    )
]
MODES = {
    "float32": {},
    "float16": {"quantization": "float16"},
    "dynamic_range": {"quantization": "dynamic_range"},
    "int8": {"quantization": "int8"},
    "float32 step": {"streaming": True},
    "int8 step": {"streaming": True, "quantization": "int8"},
    "int16x8 step": {"streaming": True, "quantization": "int16x8"},
}


def name_of(combination):
    c = combination
    return (
        f"{c['core']}-att{int(c['attention'])}-res{int(c['residual'])}-"
        f"out{c['output_units'] or 0}"
    )


def build(combination, units, features, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, features))
    hidden = keras_feedback.layers.Feedback(
        units, return_sequences=True, engine="reference", **combination
    )(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(hidden))


def int8_weights_error(model, x):
    """Max relative error of ``model`` with every kernel rounded to int8 as
    LiteRT stores it (symmetric, one scale per output channel)."""
    expected = np.asarray(model(x))
    saved = [w.numpy() for w in model.weights]
    try:
        for weight, value in zip(model.weights, saved):
            if value.ndim >= 2:
                value = value.astype("float64")
                scale = np.max(np.abs(value), axis=0, keepdims=True) / 127
                scale[scale == 0] = 1.0
                weight.assign(np.round(value / scale) * scale)
        rounded = np.asarray(model(x))
    finally:
        for weight, value in zip(model.weights, saved):
            weight.assign(value)
    return export.ErrorTally().add("output", rounded, expected).max_rel


def measure(model, x, calibration, root, modes=MODES):
    row = {}
    for label, options in modes.items():
        if "quantization" in options and options["quantization"].startswith("int"):
            options = {**options, "representative_data": calibration}
        path = export.export_litert(
            model,
            os.path.join(root, label.replace(" ", "_") + ".tflite"),
            overwrite=True,
            **options,
        )
        report = export.verify_litert(model, path, x)
        row[label] = {
            "max_rel_error": report["max_rel_error"],
            "size_bytes": report["size_bytes"],
            "step_latency_us": 1e3 * report["step_latency_ms"],
        }
    return row


FUSED_MODES = {
    "float32": {},
    "float16": {"quantization": "float16"},
    "dynamic_range": {"quantization": "dynamic_range"},
    "int8": {"quantization": "int8"},
}


def sequence_latency_ms(path, x, repeats=20, warmup=3):
    """Median ms of one invoke of a whole-sequence file on ``x``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    detail = interpreter.get_signature_runner().get_input_details()["x"]
    interpreter.resize_tensor_input(detail["index"], x.shape)
    interpreter.allocate_tensors()
    seconds = []
    for i in range(warmup + repeats):
        interpreter.reset_all_variables()
        interpreter.set_tensor(detail["index"], x)
        start = time.perf_counter()
        interpreter.invoke()
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return 1e3 * float(np.median(seconds))


def fused_lstm_rows(root, units, features, steps=100, batches=(1, 8)):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, features))
    hidden = keras_feedback.layers.Feedback(
        units, feedback_units=0, core="lstm", return_sequences=True
    )(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(max(batches), steps, features)).astype("float32")
    calibration = rng.normal(size=(16, steps, features)).astype("float32")
    rows = {}
    for label, options in FUSED_MODES.items():
        if options.get("quantization") == "int8":
            options = {**options, "representative_data": calibration}
        for fused in (False, True):
            row = {}
            for batch in batches:
                extra = {"fused_lstm": True, "batch_size": batch} if fused else {}
                path = export.export_litert(
                    model,
                    os.path.join(root, f"{label}_{fused}_{batch}.tflite"),
                    overwrite=True,
                    **options,
                    **extra,
                )
                row[f"ms_batch{batch}"] = sequence_latency_ms(path, x[:batch])
                if batch == batches[0]:
                    row["size_bytes"] = os.path.getsize(path)
                    row["ops"] = export.litert_ops(path)
                if batch == max(batches):
                    report = export.verify_litert(model, path, x)
                    row["max_rel_error"] = report["max_rel_error"]
            key = f"{label} {'fused' if fused else 'WHILE'}"
            rows[key] = row
            print(f"lstm{units}", key, export.json_report(row), flush=True)
    return rows


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--fused-lstm":
        out = argv[1] if len(argv) > 1 else "fused_lstm_table.json"
        with tempfile.TemporaryDirectory() as root:
            result = {
                f"lstm{units}": fused_lstm_rows(root, units, features)
                for units, features in ((128, 32), (16, 8))
            }
        with open(out, "w") as f:
            f.write(export.json_report(result, indent=1))
        return result
    out = argv[0] if argv else "quantization_table.json"
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 7, 32)).astype("float32")
    calibration = rng.normal(size=(16, 7, 32)).astype("float32")
    result = {"matrix": {}, "lstm128": None}
    with tempfile.TemporaryDirectory() as root:
        for i, combination in enumerate(COMBINATIONS):
            model = build(combination, 32, 32, seed=100 + i)
            row = measure(model, x, calibration, root)
            row["int8 weights in Keras"] = int8_weights_error(model, x)
            result["matrix"][name_of(combination)] = row
            print(name_of(combination), export.json_report(row), flush=True)
        keras.utils.set_random_seed(0)
        inputs = keras.Input((None, 64))
        hidden = keras_feedback.layers.Feedback(
            128, core="lstm", return_sequences=True, engine="reference"
        )(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
        lstm_x = rng.normal(size=(1, 64, 64)).astype("float32")
        lstm_calibration = rng.normal(size=(16, 64, 64)).astype("float32")
        result["lstm128"] = measure(model, lstm_x, lstm_calibration, root)
        print("lstm128", export.json_report(result["lstm128"]), flush=True)
    with open(out, "w") as f:
        f.write(export.json_report(result, indent=1))
    return result


if __name__ == "__main__":
    main()
