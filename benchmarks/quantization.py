"""int8 for phones: post-training against quantization-aware training.

Step models (``export_litert(..., streaming=True)``) in float32,
post-training int8 (calibrated), QAT int8 (``keras_feedback.quantization``:
fine-tuned with the int8 rounding, exported with its ranges) and int16x8,
side by side: error against the float Keras model, file size, latency per
step (ai_edge_litert's interpreter, one thread), and on a task its metric.
Printed as markdown tables.

1. **The demo's task** (the adding problem, T=100, ``keras-feedback
   demo``'s model: ``Feedback(32, feedback_units=8, core="gru",
   attention=True)`` and a ``Dense(1)``): trained in float for
   ``--steps`` steps, then QAT-fine-tuned for ``--qat-steps`` steps (Adam
   at a tenth of the learning rate, ranges moved every 100 steps). Test MSE
   of each file streamed over held-out sequences, beside the trivial
   baseline (always predict 1: 0.1667) and the float model's.
2. **The export matrix** (the 24 core x attention x residual x output units
   models of ``tests/test_export_matrix.py``, 32 units and features, random
   weights; ``--quick``: its 8 pairwise cases): post-training int8 against
   QAT int8, QAT fine-tuned for ``--matrix-steps`` steps to reproduce the
   float model's outputs on random sequences (distillation: the float model
   is the teacher); max error relative to the largest |float output| on
   fresh sequences, streamed.

    python benchmarks/quantization.py            # both parts, ~12 min
    python benchmarks/quantization.py --quick    # a smoke run, ~3 min
"""

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from keras_feedback import datasets  # noqa: E402
from keras_feedback import export  # noqa: E402
from keras_feedback import quantization  # noqa: E402
from keras_feedback.layers import Feedback  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _limits  # noqa: E402

MODES = ("float32", "int8 post-training", "int8 QAT", "int16x8")


def streamed(path, x):
    """The step file's outputs ``y`` over ``x`` ``(B, T, F)`` (every step),
    and its median latency per step in ms."""
    interpreter = Interpreter(model_path=path, num_threads=1)
    runner = interpreter.get_signature_runner("step")
    states = {
        name: np.zeros((len(x), d["shape_signature"][-1]), np.float32)
        for name, d in runner.get_input_details().items()
        if name != "x"
    }
    outputs, seconds = [], []
    for t in range(x.shape[1]):
        start = time.perf_counter()
        result = runner(x=np.ascontiguousarray(x[:, t]), **states)
        seconds.append(time.perf_counter() - start)
        states = {name: result[name] for name in states}
        outputs.append(result["y"])
    return np.stack(outputs, axis=1), 1e3 * statistics.median(seconds)


def export_modes(float_model, qat_model, folder, calibration):
    """mode -> path of its step file."""
    paths = {}
    for mode in MODES:
        path = os.path.join(folder, mode.replace(" ", "_") + ".tflite")
        if mode == "float32":
            export.export_litert(float_model, path, streaming=True)
        elif mode == "int8 QAT":
            export.export_litert(qat_model, path, quantization="int8", streaming=True)
        else:
            export.export_litert(
                float_model,
                path,
                quantization=mode.split()[0],
                representative_data=calibration,
                streaming=True,
            )
        paths[mode] = path
    return paths


def relative_error(outputs, reference):
    return float(np.abs(outputs - reference).max() / np.abs(reference).max())


def demo_task(args):
    task_name = "adding_problem/T100"
    data_dir = os.path.join(tempfile.gettempdir(), "keras_feedback_bench_tfds")
    train, task = datasets.load(
        task_name, "train", data_dir=data_dir, batch_size=64, shuffle=True, seed=0
    )
    val, _ = datasets.load(task_name, "validation[:256]", data_dir=data_dir)
    test, _ = datasets.load(
        task_name, f"test[:{args.test_examples}]", data_dir=data_dir
    )
    (x_val, _), (x_test, y_test) = (
        tuple(np.concatenate([b[i].numpy() for b in split]) for i in (0, 1))
        for split in (val, test)
    )
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, task.input_size), name="x")
    hidden = Feedback(32, feedback_units=8, core="gru", attention=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="y")(hidden))
    model.compile(optimizer=keras.optimizers.Adam(3e-3, clipnorm=1.0), loss="mse")
    model.fit(train.repeat(), steps_per_epoch=args.steps, epochs=1, verbose=0)
    start = time.perf_counter()
    qat = quantization.quantize_model(model, x_val)
    qat.compile(optimizer=keras.optimizers.Adam(3e-4, clipnorm=1.0), loss="mse")
    qat.fit(
        train.repeat(),
        steps_per_epoch=args.qat_steps,
        epochs=1,
        verbose=0,
        callbacks=[quantization.UpdateRanges(x_val, every=100)],
    )
    qat_seconds = time.perf_counter() - start
    reference = model.predict(x_test, verbose=0)
    float_mse = float(np.mean((reference[:, 0] - y_test) ** 2))
    baseline = float(np.mean((1.0 - y_test) ** 2))
    with tempfile.TemporaryDirectory() as folder:
        paths = export_modes(model, qat, folder, x_val[:32])
        rows = []
        for mode, path in paths.items():
            outputs, latency = streamed(path, x_test)
            last = outputs[:, -1, 0]
            mse = float(np.mean((last - y_test) ** 2))
            rows.append(
                f"| {mode} | {mse:.5f} | {mse / float_mse:.2f}x | "
                f"{relative_error(last, reference[:, 0]):.2e} | "
                f"{os.path.getsize(path) / 1024:.1f} KiB | {latency * 1e3:.1f} |"
            )
    print(
        f"The demo's task: adding problem T=100, {len(x_test)} held-out "
        f"sequences, float model trained {args.steps} steps, QAT "
        f"{args.qat_steps} steps ({qat_seconds:.0f} s)"
    )
    print(
        "| step model | test MSE | / float Keras MSE | max rel. error vs "
        f"float Keras | file | µs per step, batch of {len(x_test)} |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| float Keras (reference) | {float_mse:.5f} | 1.00x | 0 | | |\n"
        f"| trivial baseline (always 1) | {baseline:.5f} | "
        f"{baseline / float_mse:.1f}x | | | |"
    )
    print("\n".join(rows))
    print()


COMBINATIONS = [
    dict(zip(("core", "attention", "residual", "output_units"), values))
    for values in itertools.product(
        ("simple", "gru", "lstm"), (False, True), (False, True), (None, 3)
    )
]
PAIRWISE = [
    ("simple", False, False, None),
    ("simple", True, True, 3),
    ("gru", False, True, 3),
    ("gru", True, False, None),
    ("gru", True, True, None),
    ("lstm", False, False, 3),
    ("lstm", True, False, None),
    ("lstm", True, True, 3),
]


def matrix_model(case, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, 32), name="x")
    hidden = Feedback(
        32, return_sequences=True, engine="reference", name="feedback", **case
    )(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, name="y")(hidden))


def matrix(args):
    cases = COMBINATIONS
    if args.quick:
        cases = [
            dict(zip(("core", "attention", "residual", "output_units"), c))
            for c in PAIRWISE
        ]
    rng = np.random.default_rng(0)
    train_x = rng.normal(size=(256, 20, 32)).astype(np.float32)
    fresh = rng.normal(size=(8, 20, 32)).astype(np.float32)
    print(
        f"The export matrix: {len(cases)} models (32 units and features, "
        f"random weights), QAT distilled from the float model for "
        f"{args.matrix_steps} steps on 256 random sequences of 20 steps; "
        "errors over 8 fresh ones"
    )
    print(
        "| core | attention | residual | output units | int8 post-training | "
        "int8 QAT | int16x8 | QAT / post-training |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|")
    ratios = []
    for i, case in enumerate(cases):
        model = matrix_model(case, i)
        teacher = model.predict(train_x, verbose=0)
        qat = quantization.quantize_model(model, train_x[:32])
        qat.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        steps = args.matrix_steps
        qat.fit(
            train_x,
            teacher,
            batch_size=32,
            epochs=max(1, steps * 32 // len(train_x)),
            verbose=0,
            callbacks=[quantization.UpdateRanges(train_x[:32], every=50)],
        )
        reference = model.predict(fresh, verbose=0)
        errors = {}
        with tempfile.TemporaryDirectory() as folder:
            paths = export_modes(model, qat, folder, train_x[:16])
            for mode, path in paths.items():
                if mode != "float32":
                    errors[mode] = relative_error(streamed(path, fresh)[0], reference)
        ratio = errors["int8 QAT"] / errors["int8 post-training"]
        ratios.append(ratio)
        print(
            f"| {case['core']} | {case['attention']} | {case['residual']} | "
            f"{case['output_units']} | {errors['int8 post-training']:.2e} | "
            f"{errors['int8 QAT']:.2e} | {errors['int16x8']:.2e} | {ratio:.2f} |"
        )
    print(
        f"\nQAT / post-training int8 error, median over the models: "
        f"{statistics.median(ratios):.2f} (range {min(ratios):.2f} to "
        f"{max(ratios):.2f})\n"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--qat-steps", type=int, default=300)
    parser.add_argument("--matrix-steps", type=int, default=200)
    parser.add_argument("--test-examples", type=int, default=512)
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--no-matrix", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.qat_steps = min(args.steps, 300), min(args.qat_steps, 100)
        args.matrix_steps, args.test_examples = min(args.matrix_steps, 40), 128
    start = time.perf_counter()
    if not args.no_demo:
        demo_task(args)
    if not args.no_matrix:
        matrix(args)
    print(f"Machine: {_limits.machine()}")
    print(f"Total time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
