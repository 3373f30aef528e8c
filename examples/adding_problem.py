"""The adding problem: a feedback model sums the two marked values of a sequence.

Each step carries a value in U[0, 1] and a marker; the target is the sum of
the two marked values (Le et al. 2015). Always predicting the training
targets' mean (about 1) scores a held-out MSE of about 0.167; a model that
remembers the first marked value across the sequence gets near 0. Data: the
built-in TFDS dataset ``adding_problem`` (generated locally, no download).

    python examples/adding_problem.py
    python examples/adding_problem.py --length 200 --steps 4000
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _example_utils as utils  # noqa: E402  (before TensorFlow: quiet start)
import keras  # noqa: E402

import keras_feedback  # noqa: E402

EPILOG = """\
data: the built-in TFDS dataset adding_problem/T<length>, generated locally
  (no download) into --data-dir (default ~/tensorflow_datasets) on first use.
runtime at defaults: about 3 min on a 2-core CPU (plus about 15 s to
  generate the data the first time).
trivial baseline: always predicting the training targets' mean, scored on
  the held-out test split (MSE about 0.167).
writes: learning_curve.png into --out."""


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    utils.add_common_arguments(parser, "adding_problem")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    name = f"adding_problem/T{args.length}"
    cut = "" if args.max_examples is None else f"[:{args.max_examples}]"
    with utils.quiet_data(name, args.data_dir):
        train, task = keras_feedback.datasets.load(
            name,
            "train" + cut,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            shuffle=True,
        )
        validation, _ = keras_feedback.datasets.load(
            name, "validation" + cut, data_dir=args.data_dir, batch_size=500
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
    history = model.fit(
        train.repeat(),
        steps_per_epoch=max(1, args.steps // epochs),
        epochs=epochs,
        validation_data=validation,
        shuffle=False,
        verbose=2,
    )
    after = model.evaluate(test, verbose=0)
    baseline = utils.mse_of_mean(
        utils.targets_of(train, limit=10_000), utils.targets_of(test)
    )
    print(f"held-out (test split) MSE before training: {before:.4f}")
    result = utils.report("MSE", after, baseline, "always predicting the training mean")
    if not args.no_plot:
        utils.plot_curves(
            os.path.join(args.out, "learning_curve.png"),
            {
                "training MSE": history.history["loss"],
                "validation MSE": history.history["val_loss"],
            },
            "MSE",
            baseline,
            "always predicting the training mean",
        )
    return {**result, "mse_before": before, "mse_after": after}


if __name__ == "__main__":
    main()
