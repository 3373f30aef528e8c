"""Copy memory: a feedback model recalls 10 symbols after a long delay.

The input shows 10 symbols out of 8, then blanks for ``delay`` steps, then a
delimiter; the model must then output the 10 symbols in order (Arjovsky et
al. 2016). A model without memory scores a per-step cross-entropy of
10 ln 8 / (delay + 20); the goal is to do far better. Data: the built-in
TFDS dataset ``copy_memory`` (generated locally, no download).

    python examples/copy_memory.py
    python examples/copy_memory.py --delay 100 --steps 8000
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _example_utils as utils  # noqa: E402  (before TensorFlow: quiet start)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_feedback  # noqa: E402

EPILOG = """\
data: the built-in TFDS dataset copy_memory/delay<delay>, generated locally
  (no download) into --data-dir (default ~/tensorflow_datasets) on first use.
runtime at defaults: about 6 min on a 2-core CPU.
trivial baseline: the training targets' class frequencies at each position
  (what a model without memory can do best), scored on the held-out test
  split: per-step cross-entropy about 10 ln 8 / (delay + 20).
writes: learning_curve.png into --out."""


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--delay", type=int, default=50, choices=[10, 50, 100, 200])
    parser.add_argument("--steps", type=int, default=5000, help="training steps")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--feedback-units", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument(
        "--max-examples",
        type=int,
        default=None,
        help="use at most this many examples per split",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data folder")
    utils.add_common_arguments(parser, "copy_memory")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    name = f"copy_memory/delay{args.delay}"
    cut = "" if args.max_examples is None else f"[:{args.max_examples}]"

    def split(which, batch_size, shuffle=False):
        ds, task = keras_feedback.datasets.load(
            name,
            which + cut,
            data_dir=args.data_dir,
            batch_size=batch_size,
            shuffle=shuffle,
        )
        # Tokens as one-hot vectors: a float input, as the exports expect.
        return ds.map(lambda x, y: (tf.one_hot(x, task.input_size), y)), task

    with utils.quiet_data(name, args.data_dir):
        train, task = split("train", args.batch_size, shuffle=True)
        validation, _ = split("validation", 500)
        test, _ = split("test", 500)

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
    model.compile(
        keras.optimizers.Adam(args.learning_rate, clipnorm=1.0),
        "sparse_categorical_crossentropy",
    )
    before = model.evaluate(test, verbose=0)
    epochs = max(1, args.steps // 500)
    history = model.fit(
        train.repeat(),
        steps_per_epoch=max(1, args.steps // epochs),
        epochs=epochs,
        validation_data=validation,
        shuffle=False,
        verbose=2,
    )
    after = model.evaluate(test, verbose=0)
    baseline = utils.unigram_cross_entropy(
        utils.targets_of(train, limit=10_000),
        utils.targets_of(test),
        task.num_classes,
        per_position=True,
    )
    print(
        f"held-out (test split) cross-entropy before training: {before:.4f}; "
        f"memoryless in theory: 10 ln 8 / (delay + 20) = {task.baseline_loss:.4f}"
    )
    name = "the training targets' class frequencies at each position"
    result = utils.report("per-step cross-entropy", after, baseline, name)
    if not args.no_plot:
        utils.plot_curves(
            os.path.join(args.out, "learning_curve.png"),
            {
                "training": history.history["loss"],
                "validation": history.history["val_loss"],
            },
            "per-step cross-entropy (nats)",
            baseline,
            "memoryless baseline",
        )
    return {**result, "loss_before": before, "loss_after": after}


if __name__ == "__main__":
    main()
