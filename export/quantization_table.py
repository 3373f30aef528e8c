"""Measures every LiteRT mode on the test matrix and on a 128-unit LSTM.

    python export/quantization_table.py [OUT.json]

Writes the figures of export/README.md's quantisation tables: for each of
the 24 core x attention x residual x output-projection models of
tests/test_export_matrix.py (32 units, 32 features, calibrated on 16
sequences of 7 steps, checked on 5 fresh ones) the max error relative to
the largest |Keras output| and the file size of every mode, and the error
of the same model with its weights rounded to int8 in Keras (the share of
the error no activation format removes); then size and latency per step of
an lstm of 128 units, 64 features (batch 1, 64 steps). Takes minutes.
"""

import itertools
import json
import os
import sys
import tempfile

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
    return float(np.max(np.abs(rounded - expected)) / np.max(np.abs(expected)))


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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
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
            print(name_of(combination), json.dumps(row), flush=True)
        keras.utils.set_random_seed(0)
        inputs = keras.Input((None, 64))
        hidden = keras_feedback.layers.Feedback(
            128, core="lstm", return_sequences=True, engine="reference"
        )(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
        lstm_x = rng.normal(size=(1, 64, 64)).astype("float32")
        lstm_calibration = rng.normal(size=(16, 64, 64)).astype("float32")
        result["lstm128"] = measure(model, lstm_x, lstm_calibration, root)
        print("lstm128", json.dumps(result["lstm128"]), flush=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
