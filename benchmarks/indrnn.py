"""IndRNN (``cores.IndRNNCore``) against Keras's LSTM and GRU.

Two parts, printed as markdown tables:

1. **Throughput**: sequences per second of inference (``predict_on_batch``)
   and training (``train_on_batch``, Adam, MSE on the last output) of one
   layer of ``Feedback(core=IndRNNCore(), feedback_units=0)``, of
   ``keras.layers.LSTM`` and ``GRU`` (each compiled without and with
   ``jit_compile``, the better one kept), at B=64, T=100, D=32 and H=128,
   512. IndRNN's recurrence is elementwise, so its step costs O(H), not
   O(H²): beside it, the cost of the hoisted input projection alone (the
   same model with the recurrence removed: one ``(B*T, D) x (D, H)`` matmul
   and the ReLU) says how close the engine gets to the part no recurrence
   can avoid.
2. **The adding problem** at T=1000 (and T=5000 with ``--long``), generated
   here with ``keras_feedback.datasets.adding_problem.generate`` (held-out
   test sequences): a two-layer IndRNN (ReLU, ``|u| <= 2^(1/T)``, the last
   layer ``|u| >= 0.5^(1/T)``, as the paper) against a Keras ``LSTM`` of
   about the same parameter count, each trained for the same wall-clock
   budget with Adam; the test MSE each reaches against the trivial
   baseline (always predict 1: MSE 0.167).

    python benchmarks/indrnn.py                 # both parts, ~15 min
    python benchmarks/indrnn.py --quick         # a smoke run, ~1 min
    python benchmarks/indrnn.py --budget 300 --long
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_feedback import cores  # noqa: E402
from keras_feedback.datasets._adding_problem import generate  # noqa: E402
from keras_feedback.layers import Feedback  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _limits  # noqa: E402


def one_layer(kind, units, steps, features, jit_compile):
    """A one-layer model (last output), Adam, MSE."""
    if kind == "indrnn":
        layer = Feedback(units, feedback_units=0, core=cores.IndRNNCore())
    elif kind == "projection":
        # The hoisted input projection alone: x W + b and the ReLU, last step.
        layer = keras.Sequential(
            [
                keras.layers.Dense(units, activation="relu"),
                keras.layers.Lambda(lambda h: h[:, -1]),
            ]
        )
    else:
        layer = getattr(keras.layers, kind)(units)
    model = keras.Sequential([keras.Input((steps, features)), layer])
    model.compile(keras.optimizers.Adam(1e-4), "mse", jit_compile=jit_compile)
    return model


def throughput(args):
    rows = []
    for units in args.units:
        x = (
            np.random.default_rng(0)
            .normal(size=(args.batch, args.steps, 32))
            .astype("float32")
        )
        y = np.zeros((args.batch, units), "float32")
        results = {}
        for kind in ("LSTM", "GRU", "indrnn", "projection"):
            best = {"inference": 0.0, "training": 0.0}
            # Feedback compiles its own loop (the fused XLA engine): the
            # model around it is not jit-compiled.
            for jit in (False,) if kind == "indrnn" else (False, True):
                model = one_layer(kind, units, args.steps, 32, jit)
                infer = _limits.timed(
                    lambda: model.predict_on_batch(x), args.repeats, 0.3
                )
                train = _limits.timed(
                    lambda: model.train_on_batch(x, y), args.repeats, 0.3
                )
                best["inference"] = max(best["inference"], args.batch / infer)
                best["training"] = max(best["training"], args.batch / train)
            results[kind] = best
        for mode in ("inference", "training"):
            ind = results["indrnn"][mode]
            rows.append(
                (
                    units,
                    mode,
                    results["LSTM"][mode],
                    results["GRU"][mode],
                    ind,
                    ind / results["LSTM"][mode],
                    ind / results["GRU"][mode],
                    results["projection"][mode],
                    ind / results["projection"][mode],
                )
            )
    print(
        f"Throughput, sequences/s (B={args.batch}, T={args.steps}, D=32; Keras "
        "best of jit_compile off/on; IndRNN: Feedback(core=IndRNNCore(), feedback_units=0), fused engine)"
    )
    print(
        "| H | mode | Keras LSTM | Keras GRU | IndRNN | IndRNN / LSTM | IndRNN / GRU "
        "| projection alone | IndRNN / projection alone |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]} | {r[2]:.0f} | {r[3]:.0f} | {r[4]:.0f} | {r[5]:.2f}x "
            f"| {r[6]:.2f}x | {r[7]:.0f} | {r[8]:.2f} |"
        )
    print()


def adding_model(kind, steps, units):
    inputs = keras.Input((steps, 2))
    if kind == "indrnn":
        high, low = 2 ** (1 / steps), 0.5 ** (1 / steps)
        # The paper's setup for the adding problem: input weights from
        # N(0, 0.001). The fused engine explicitly: "auto" runs a layer this
        # small (O(H) per step) on the reference loop, which is slow at T=1000.
        small = keras.initializers.RandomNormal(stddev=0.001)
        h = Feedback(
            units,
            feedback_units=0,
            core=cores.IndRNNCore(recurrent_max_abs=high),
            return_sequences=True,
            kernel_initializer=small,
            engine="xla",
        )(inputs)
        h = Feedback(
            units,
            feedback_units=0,
            core=cores.IndRNNCore(recurrent_max_abs=high, recurrent_min_abs=low),
            kernel_initializer=small,
            engine="xla",
        )(h)
    else:
        h = keras.layers.LSTM(units)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    # Adam with gradient clipping for both (the paper's IndRNN rate, 2e-4;
    # Keras's default 1e-3 for the LSTM).
    rate = 2e-4 if kind == "indrnn" else 1e-3
    model.compile(keras.optimizers.Adam(rate, clipnorm=1.0), "mse")
    return model


def train_for(model, data, budget, batch):
    (x, y), (x_test, y_test) = data
    rng = np.random.default_rng(1)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < budget:
        idx = rng.integers(0, len(x), batch)
        model.train_on_batch(x[idx], y[idx])
        steps += 1
    mse = float(model.evaluate(x_test, y_test, batch_size=256, verbose=0))
    return mse, steps, model.count_params()


def adding(args, steps):
    rng = np.random.default_rng(0)
    x, y, _ = generate(args.train, steps, rng)
    x_test, y_test, _ = generate(args.test, steps, rng)
    data = ((x, y[:, None]), (x_test, y_test[:, None]))
    baseline = float(np.mean((y_test - 1.0) ** 2))
    rows = []
    for kind, units in (("indrnn", args.indrnn_units), ("lstm", args.lstm_units)):
        model = adding_model(kind, steps, units)
        mse, taken, params = train_for(model, data, args.budget, args.batch)
        rows.append((kind, units, params, taken, mse))
    print(
        f"The adding problem at T={steps}: test MSE after {args.budget:.0f} s of "
        f"training (batch {args.batch}, {args.train} training and {args.test} "
        f"held-out test sequences; baseline, always 1: {baseline:.4f})"
    )
    print(
        "| model | units | parameters | training steps | test MSE | beats the baseline |"
    )
    print("|---|---:|---:|---:|---:|---|")
    names = {
        "indrnn": "2 x IndRNN (ReLU, abs(u) <= 2^(1/T))",
        "lstm": "Keras LSTM",
    }
    for kind, units, params, taken, mse in rows:
        beat = "yes" if mse < 0.5 * baseline else ("barely" if mse < baseline else "no")
        print(f"| {names[kind]} | {units} | {params} | {taken} | {mse:.4f} | {beat} |")
    print()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (~1 min)")
    parser.add_argument(
        "--long", action="store_true", help="also the adding problem at T=5000"
    )
    parser.add_argument("--budget", type=float, default=180.0, help="seconds per model")
    parser.add_argument("--units", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-adding", action="store_true")
    args = parser.parse_args(argv)
    args.batch, args.steps, args.repeats = 64, 100, 3
    args.train, args.test = 5000, 1000
    args.indrnn_units, args.lstm_units = 128, 64  # 17.3k and 17.2k parameters
    lengths = [1000] + ([5000] if args.long else [])
    if args.quick:
        args.units, args.steps, args.repeats = [32], 20, 1
        args.budget, args.train, args.test = 5.0, 256, 128
        lengths = [100]
    print(f"Machine: {_limits.machine()}\n")
    if not args.no_throughput:
        throughput(args)
    if not args.no_adding:
        for steps in lengths:
            adding(args, steps)


if __name__ == "__main__":
    main()
