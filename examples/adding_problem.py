"""The adding problem: a feedback model sums the two marked values of a sequence.

Each step carries a value in U[0, 1] and a marker; the target is the sum of
the two marked values (Le et al. 2015). Always predicting 1 scores an MSE of
about 0.167; a model that remembers the first marked value across the
sequence gets near 0. Data: the built-in TFDS dataset ``adding_problem``
(generated locally, no download).

    python examples/adding_problem.py --length 100 --steps 2000
"""

import argparse

import keras

import keras_feedback


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=100, choices=[50, 100, 200, 500])
    parser.add_argument("--steps", type=int, default=2000, help="training steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--feedback-units", type=int, default=8)
    parser.add_argument(
        "--max-examples",
        type=int,
        default=None,
        help="use at most this many examples per split",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data folder")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    name = f"adding_problem/T{args.length}"
    cut = "" if args.max_examples is None else f"[:{args.max_examples}]"
    train, task = keras_feedback.datasets.load(
        name,
        "train" + cut,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        shuffle=True,
    )
    test, _ = keras_feedback.datasets.load(
        name, "test" + cut, data_dir=args.data_dir, batch_size=500
    )

    model = keras.Sequential(
        [
            keras.Input((task.time_steps, task.input_size)),
            keras_feedback.layers.Feedback(
                args.units, feedback_units=args.feedback_units, core="gru"
            ),
            keras.layers.Dense(1),
            keras.layers.Reshape(()),
        ]
    )
    model.compile(keras.optimizers.Adam(3e-3, clipnorm=1.0), "mse")
    before = model.evaluate(test, verbose=0)
    epochs = max(1, args.steps // 250)
    model.fit(
        train.repeat(),
        steps_per_epoch=max(1, args.steps // epochs),
        epochs=epochs,
        shuffle=False,
        verbose=2,
    )
    after = model.evaluate(test, verbose=0)
    print(
        f"test MSE before training {before:.4f}, after {after:.4f} "
        f"(predicting 1 always: {task.baseline_loss:.4f})"
    )
    return {"mse_before": before, "mse_after": after, "baseline": task.baseline_loss}


if __name__ == "__main__":
    main()
