"""Row-by-row MNIST: a feedback model reads a digit one pixel row at a time.

Each 28x28 image is a sequence of 28 steps of 28 pixels; the feedback state
after the last row classifies the digit. Reads ``mnist`` from TFDS when it
is prepared in the data folder, or downloads it with ``--download``;
otherwise (offline) it runs on a small SYNTHETIC stand-in: digits drawn
from a 5x7 pixel font, scaled, shifted and noised, 28x28 like MNIST.

    python examples/mnist_rows.py                 # offline: synthetic digits
    python examples/mnist_rows.py --download      # the real MNIST (11 MB)
    python examples/mnist_rows.py --data-dir DIR  # MNIST prepared in DIR
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _example_utils as utils  # noqa: E402  (before TensorFlow: quiet start)
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_feedback  # noqa: E402

EPILOG = """\
data: TFDS's mnist (60,000 training and 10,000 test images) when prepared
  in --data-dir (default ~/tensorflow_datasets) or with --download (11 MB,
  the only network access); without it, a synthetic stand-in made in numpy
  (--synthetic-examples digit images from a pixel font; the output says
  SYNTHETIC).
runtime at defaults: about 30 s on a 2-core CPU (synthetic); real MNIST,
  3 epochs: about 3 min.
trivial baseline: always predicting the training split's most frequent
  digit, scored on the held-out test split (accuracy about 0.10).
writes: learning_curve.png into --out."""

# Digits 0-9 in a 5x7 pixel font, one string of 7 rows each.
FONT = (
    "01110 10001 10011 10101 11001 10001 01110",
    "00100 01100 00100 00100 00100 00100 01110",
    "01110 10001 00001 00010 00100 01000 11111",
    "11111 00010 00100 00010 00001 10001 01110",
    "00010 00110 01010 10010 11111 00010 00010",
    "11111 10000 11110 00001 00001 10001 01110",
    "00110 01000 10000 11110 10001 10001 01110",
    "11111 00001 00010 00100 01000 01000 01000",
    "01110 10001 10001 01110 10001 10001 01110",
    "01110 10001 10001 01111 00001 00010 01100",
)


def synthetic_digits(num_examples, seed):
    """Digit-like 28x28 images ``(N, 28, 28)`` in [0, 1] and labels ``(N,)``:
    a font digit scaled 2-3x, shifted, its strokes of random brightness,
    under Gaussian noise."""
    rng = np.random.default_rng(seed)
    glyphs = [
        np.array([[c == "1" for c in row] for row in digit.split()], np.float32)
        for digit in FONT
    ]
    labels = rng.integers(0, 10, num_examples)
    images = np.zeros((num_examples, 28, 28), np.float32)
    for i, label in enumerate(labels):
        sy, sx = rng.integers(2, 4, size=2)
        glyph = np.kron(glyphs[label], np.ones((sy, sx), np.float32))
        top = rng.integers(0, 28 - glyph.shape[0] + 1)
        left = rng.integers(0, 28 - glyph.shape[1] + 1)
        images[i, top : top + glyph.shape[0], left : left + glyph.shape[1]] = (
            glyph * rng.uniform(0.5, 1.0)
        )
    images += rng.normal(0, 0.3, images.shape).astype(np.float32)
    return np.clip(images, 0, 1), labels.astype(np.int64)


def load_data(args):
    """``(train, test, source, train_labels, test_labels)``: batched
    datasets of (rows, label), and what the data is."""
    import tensorflow as tf

    cut = "" if args.max_examples is None else f"[:{args.max_examples}]"
    if args.download:
        print("downloading mnist if it is not prepared yet (11 MB)", flush=True)
    try:
        with utils.quiet_data("mnist", args.data_dir, generated=False):
            train, _ = keras_feedback.datasets.load(
                "mnist",
                "train" + cut,
                data_dir=args.data_dir,
                batch_size=args.batch_size,
                shuffle=True,
                download=args.download,
            )
            test, _ = keras_feedback.datasets.load(
                "mnist", "test" + cut, data_dir=args.data_dir, batch_size=1000
            )
        train_labels = utils.targets_of(train)
        return train, test, "mnist", train_labels, utils.targets_of(test)
    except keras_feedback.datasets.DatasetNotPreparedError as error:
        command = error.build_command
        print(
            "mnist is not prepared there and --download was not given: "
            "using a SYNTHETIC stand-in (font digits in numpy) instead. For the "
            f"real data: --download, or `{command}` on a machine with network."
        )
    n = args.synthetic_examples
    x, y = synthetic_digits(n + n // 4, seed=0)
    x_train, y_train, x_test, y_test = x[:n], y[:n], x[n:], y[n:]
    print(
        f"SYNTHETIC digits: {len(x_train)} training and {len(x_test)} held-out "
        "28x28 images (not MNIST)"
    )
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    train = train.shuffle(n, seed=0).batch(args.batch_size)
    test = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(1000)
    return train, test, "synthetic digits", y_train, y_test


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--feedback-units", type=int, default=16)
    parser.add_argument(
        "--max-examples",
        type=int,
        default=None,
        help="use at most this many images per split (MNIST)",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data folder")
    parser.add_argument(
        "--download", action="store_true", help="let TFDS download MNIST (11 MB)"
    )
    parser.add_argument(
        "--synthetic-examples",
        type=int,
        default=8000,
        help="training images of the synthetic stand-in (a quarter more held out)",
    )
    utils.add_common_arguments(parser, "mnist_rows")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    train, test, source, train_labels, test_labels = load_data(args)

    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras_feedback.layers.Feedback(
                args.units,
                feedback_units=args.feedback_units,
                core="gru",
                attention=True,
            ),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(3e-3, clipnorm=1.0),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    before = model.evaluate(test, verbose=0, return_dict=True)
    history = model.fit(
        train, epochs=args.epochs, validation_data=test, shuffle=False, verbose=2
    )
    after = model.evaluate(test, verbose=0, return_dict=True)
    print(f"held-out ({source}) accuracy before training: {before['accuracy']:.3f}")
    baseline = utils.majority_accuracy(train_labels, test_labels)
    result = utils.report(
        f"accuracy ({source})",
        after["accuracy"],
        baseline,
        "always predicting the most frequent training digit",
        higher_is_better=True,
    )
    if not args.no_plot:
        utils.plot_curves(
            os.path.join(args.out, "learning_curve.png"),
            {
                "training": history.history["accuracy"],
                "held-out": history.history["val_accuracy"],
            },
            f"accuracy ({source})",
            baseline,
            "majority class",
        )
    return {
        **result,
        "source": source,
        "loss_before": before["loss"],
        "loss_after": after["loss"],
        "accuracy": after["accuracy"],
    }


if __name__ == "__main__":
    main()
