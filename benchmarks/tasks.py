"""Learning benchmarks on the built-in tasks (CPU, minutes each).

    python benchmarks/tasks.py copy-memory      # delay 50 vs the memoryless baseline
    python benchmarks/tasks.py adding-vs-lstm   # T=200: Feedback vs keras LSTM

``copy-memory`` trains a ``Feedback`` model on ``copy_memory/delay50`` for a
fixed number of steps and compares its test cross-entropy with the
memoryless baseline 10 ln 8 / 70. ``adding-vs-lstm`` trains a ``Feedback``
model and a ``keras.layers.LSTM`` model with (as near as units allow) the
same number of parameters for the same number of steps, batch, optimizer and
seed on ``adding_problem/T200``, and reports both test MSEs. Both print a
table and can write it as JSON (``--json``).
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_feedback  # noqa: E402


def _data(name, data_dir, batch_size, one_hot=False):
    def split(which, size, shuffle=False):
        ds, task = keras_feedback.datasets.load(
            name, which, data_dir=data_dir, batch_size=size, shuffle=shuffle
        )
        if one_hot:
            ds = ds.map(lambda x, y: (tf.one_hot(x, task.input_size), y))
        return ds, task

    train, task = split("train", batch_size, shuffle=True)
    test, _ = split("test", 500)
    return train.repeat(), test, task


def _fit(model, train, test, steps, learning_rate, loss):
    model.compile(keras.optimizers.Adam(learning_rate, clipnorm=1.0), loss)
    epochs = max(1, steps // 500)
    start = time.perf_counter()
    model.fit(
        train, steps_per_epoch=steps // epochs, epochs=epochs, shuffle=False, verbose=2
    )
    seconds = time.perf_counter() - start
    return float(model.evaluate(test, verbose=0)), seconds


def copy_memory(args):
    keras.utils.set_random_seed(args.seed)
    train, test, task = _data(
        f"copy_memory/delay{args.delay}", args.data_dir, args.batch_size, True
    )
    model = keras.Sequential(
        [
            keras.Input((task.time_steps, task.input_size)),
            keras_feedback.layers.Feedback(
                args.units,
                feedback_units=args.feedback_units,
                core="gru",
                return_sequences=True,
            ),
            keras.layers.Dense(task.num_classes, activation="softmax"),
        ]
    )
    loss, seconds = _fit(model, train, test, args.steps, args.learning_rate, task.loss)
    return {
        "task": task.name,
        "model": f"Feedback(gru, units={args.units}, "
        f"feedback_units={args.feedback_units})",
        "parameters": model.count_params(),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "test_cross_entropy": loss,
        "memoryless_cross_entropy": task.baseline_loss,
        "ratio": task.baseline_loss / loss,
        "training_seconds": seconds,
    }


def _lstm_units_matching(parameters, features):
    """LSTM units whose model (LSTM + Dense(1)) is nearest ``parameters``."""

    def count(units):
        return 4 * units * (features + units + 1) + units + 1

    return min(range(1, 1024), key=lambda u: abs(count(u) - parameters))


def adding_vs_lstm(args):
    results = {}
    name = f"adding_problem/T{args.length}"
    for kind in ("Feedback", "LSTM"):
        keras.utils.set_random_seed(args.seed)
        train, test, task = _data(name, args.data_dir, args.batch_size)
        if kind == "Feedback":
            layer = keras_feedback.layers.Feedback(
                args.units,
                feedback_units=args.feedback_units,
                core="gru",
                attention=True,
            )
            description = (
                f"Feedback(gru, units={args.units}, feedback_units="
                f"{args.feedback_units}, attention)"
            )
        else:
            units = _lstm_units_matching(
                results["Feedback"]["parameters"], task.input_size
            )
            layer = keras.layers.LSTM(units)
            description = f"keras.layers.LSTM({units})"
        model = keras.Sequential(
            [
                keras.Input((task.time_steps, task.input_size)),
                layer,
                keras.layers.Dense(1),
                keras.layers.Reshape(()),
            ]
        )
        mse, seconds = _fit(
            model, train, test, args.steps, args.learning_rate, task.loss
        )
        results[kind] = {
            "model": description,
            "parameters": model.count_params(),
            "test_mse": mse,
            "training_seconds": seconds,
        }
    return {
        "task": name,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "baseline_mse": 1 / 6,
        **results,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="experiment", required=True)
    copy = sub.add_parser("copy-memory", help="copy memory vs memoryless baseline")
    copy.add_argument("--delay", type=int, default=50)
    copy.add_argument("--steps", type=int, default=5000)
    copy.add_argument("--batch-size", type=int, default=128)
    copy.add_argument("--units", type=int, default=128)
    copy.add_argument("--feedback-units", type=int, default=32)
    copy.add_argument("--learning-rate", type=float, default=1e-2)
    adding = sub.add_parser("adding-vs-lstm", help="Feedback vs LSTM, adding problem")
    adding.add_argument("--length", type=int, default=200)
    adding.add_argument("--steps", type=int, default=3000)
    adding.add_argument("--batch-size", type=int, default=64)
    adding.add_argument("--units", type=int, default=32)
    adding.add_argument("--feedback-units", type=int, default=8)
    adding.add_argument("--learning-rate", type=float, default=3e-3)
    for p in (copy, adding):
        p.add_argument("--seed", type=int, default=0)
        p.add_argument(
            "--data-dir",
            default=os.path.join("keras_feedback_out", "tensorflow_datasets"),
        )
        p.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    run = copy_memory if args.experiment == "copy-memory" else adding_vs_lstm
    results = run(args)
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
