"""Activations on the adding problem: final MSE and steps to a threshold.

Trains the same feedback model (``Feedback(core=gru, units=32,
feedback_units=8)`` then ``Dense(1)``, Adam with clipnorm 1, batch 64, same
seed and initial weights) once per core activation the library ships (tanh,
the baseline, then the fixed extras and the learnable activations) for a
fixed number of steps on ``adding_problem/T<length>``. Every ``--eval-every``
steps it measures the validation MSE; it prints, per activation, the test
MSE at the end, the first step at which the validation MSE fell below
``--threshold`` and the training time.

    python benchmarks/activations.py                 # T=100, 3000 steps each
    python benchmarks/activations.py --quick         # T=50, 600 steps each
    python benchmarks/activations.py --activations tanh pade --steps 500

The data are the library's TFDS builder, generated locally into
``--data-dir`` on first use. Predicting the mean scores an MSE of 1/6.
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_feedback  # noqa: E402
from keras_feedback.activations import _learnable  # noqa: E402

ACTIVATIONS = ("tanh",) + _learnable.EXTRA_NAMES + _learnable.LEARNABLE_NAMES


def _data(length, data_dir, batch_size, seed):
    name = f"adding_problem/T{length}"
    train, task = keras_feedback.datasets.load(
        name,
        "train",
        data_dir=data_dir,
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
    )
    validation, _ = keras_feedback.datasets.load(
        name, "validation[:1000]", data_dir=data_dir, batch_size=500
    )
    test, _ = keras_feedback.datasets.load(
        name, "test[:2000]", data_dir=data_dir, batch_size=500
    )
    return train.repeat(), validation, test, task


def _model(activation, args, time_steps):
    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential(
        [
            keras.Input((time_steps, 2)),
            keras_feedback.layers.Feedback(
                args.units,
                feedback_units=args.feedback_units,
                core=args.core,
                activation=activation,
            ),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(args.learning_rate, clipnorm=1.0), "mse")
    return model


def _shared_weights(model):
    """Every weight but the activation's: the same initial values for all."""
    act = model.layers[0].cell.activation
    own = {id(w) for w in getattr(act, "weights", [])}
    return [v for v in model.weights if id(v) not in own]


def _activation_parameters(model):
    cell = model.layers[0].cell
    act = cell.activation
    return sum(int(np.prod(v.shape)) for v in getattr(act, "weights", []))


def run_one(activation, args, train, validation, test, task, initial):
    model = _model(activation, args, task.time_steps)
    # An activation with its own seed generator (rrelu) shifts the draws of
    # the initializers: start every model from the same weights instead.
    for variable, value in zip(_shared_weights(model), initial):
        variable.assign(value)
    epochs = max(1, args.steps // args.eval_every)
    start = time.perf_counter()
    history = model.fit(
        train,
        steps_per_epoch=args.eval_every,
        epochs=epochs,
        validation_data=validation,
        shuffle=False,  # the dataset is shuffled
        verbose=0,
    )
    seconds = time.perf_counter() - start
    curve = [float(v) for v in history.history["val_loss"]]
    below = [i for i, v in enumerate(curve) if v < args.threshold]
    test_mse = float(model.evaluate(test, verbose=0))
    return {
        "activation": activation,
        "activation_parameters": _activation_parameters(model),
        "test_mse": test_mse,
        "steps_to_threshold": (below[0] + 1) * args.eval_every if below else None,
        "best_validation_mse": min(curve),
        "validation_curve": curve,
        "training_seconds": seconds,
    }


def table(results, args):
    lines = [
        "| activation | its parameters | test MSE | steps to val MSE < "
        f"{args.threshold:g} | training s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        steps = r["steps_to_threshold"]
        lines.append(
            f"| {r['activation']} | {r['activation_parameters']} | "
            f"{r['test_mse']:.3g} | {'not reached' if steps is None else steps} | "
            f"{r['training_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="T=50 and 600 steps per activation"
    )
    parser.add_argument("--activations", nargs="+", default=list(ACTIVATIONS))
    parser.add_argument(
        "--length",
        type=int,
        default=None,
        help="T: 50, 100, 200 or 500 (default 100; 50 quick)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per activation (3000; 600 quick)",
    )
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--threshold", type=float, default=0.01)
    parser.add_argument("--core", default="gru", choices=("simple", "gru", "lstm"))
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--feedback-units", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data-dir", default=os.path.join("keras_feedback_out", "tensorflow_datasets")
    )
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.length is None:
        args.length = 50 if args.quick else 100
    if args.steps is None:
        args.steps = 600 if args.quick else 3000
    for name in args.activations:
        keras_feedback.activations.get(name)  # Unknown names list close ones.
    train, validation, test, task = _data(
        args.length, args.data_dir, args.batch_size, args.seed
    )
    initial = [
        v.numpy() for v in _shared_weights(_model("tanh", args, task.time_steps))
    ]
    results = []
    for name in args.activations:
        result = run_one(name, args, train, validation, test, task, initial)
        print(
            f"{name}: test MSE {result['test_mse']:.4f}, steps to "
            f"{args.threshold:g}: {result['steps_to_threshold']}, "
            f"{result['training_seconds']:.0f} s",
            flush=True,
        )
        results.append(result)
    settings = (
        f"adding_problem/T{args.length}, {args.steps} steps x batch "
        f"{args.batch_size}, Feedback(core={args.core}, units={args.units}, "
        f"feedback_units={args.feedback_units}) + Dense(1), Adam "
        f"lr={args.learning_rate:g} clipnorm=1, seed {args.seed}; "
        f"validation MSE every {args.eval_every} steps; mean-predictor MSE "
        f"{task.baseline_loss:.3f}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    print()
    print(settings)
    print()
    print(table(results, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": settings, "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
