"""Copy memory: a feedback model recalls 10 symbols after a long delay.

The input shows 10 symbols out of 8, then blanks for ``delay`` steps, then a
delimiter; the model must then output the 10 symbols in order (Arjovsky et
al. 2016). A model without memory scores a per-step cross-entropy of
10 ln 8 / (delay + 20); the goal is to do far better. Data: the built-in
TFDS dataset ``copy_memory`` (generated locally, no download).

    python examples/copy_memory.py --delay 50 --steps 5000
"""

import argparse

import keras
import tensorflow as tf

import keras_feedback


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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

    train, task = split("train", args.batch_size, shuffle=True)
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
    model.fit(
        train.repeat(),
        steps_per_epoch=max(1, args.steps // epochs),
        epochs=epochs,
        shuffle=False,
        verbose=2,
    )
    after = model.evaluate(test, verbose=0)
    print(
        f"test cross-entropy before training {before:.4f}, after {after:.4f}; "
        f"memoryless baseline {task.baseline_loss:.4f} "
        f"({task.baseline_loss / after:.1f}x the trained model's)"
    )
    return {"loss_before": before, "loss_after": after, "baseline": task.baseline_loss}


if __name__ == "__main__":
    main()
