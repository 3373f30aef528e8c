"""Sentiment analysis of IMDB reviews with a feedback model over words.

Reads ``imdb_reviews`` from TFDS when it is prepared in the data folder, or
downloads it with ``--download``; otherwise (offline) it runs on a small
SYNTHETIC stand-in: made-up reviews of filler words with a few sentiment
words, some negated ("not good"), labelled by their sum. Turns each review
into word ids with Keras's ``TextVectorization``, and classifies it with
``Embedding(mask_zero=True)`` -> ``Feedback`` -> ``Dense``: the padding is
masked, so the feedback state after the last word decides.

    python examples/sentiment_imdb.py                 # offline: synthetic reviews
    python examples/sentiment_imdb.py --download      # the real IMDB (80 MB)
    python examples/sentiment_imdb.py --data-dir DIR  # imdb_reviews prepared in DIR
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
data: TFDS's imdb_reviews (25,000 training and 25,000 test reviews) when
  prepared in --data-dir (default ~/tensorflow_datasets) or with --download
  (80 MB, the only network access); without it, a synthetic stand-in made in
  numpy (--synthetic-examples reviews; the output says SYNTHETIC).
runtime at defaults: about 45 s on a 2-core CPU (synthetic); real IMDB,
  2 epochs: about 10 min.
trivial baseline: always predicting the training split's most frequent
  label, scored on the held-out test split (accuracy about 0.5).
writes: learning_curve.png into --out."""

POSITIVE = ("good", "great", "excellent", "wonderful", "loved", "superb", "fun")
NEGATIVE = ("bad", "awful", "boring", "terrible", "hated", "dull", "weak")


def synthetic_reviews(num_examples, seed):
    """Made-up reviews ``(N,)`` of str and labels ``(N,)`` (1 positive): 20
    to 30 filler words, 1 to 4 sentiment words, each negated by a "not"
    before it with probability 0.3; the label is the sign of their sum (no
    ties)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    while len(texts) < num_examples:
        words = list(rng.choice([f"w{i}" for i in range(300)], rng.integers(10, 31)))
        score = 0
        for _ in range(rng.integers(1, 5)):
            positive = rng.random() < 0.5
            word = rng.choice(POSITIVE if positive else NEGATIVE)
            negated = rng.random() < 0.3
            score += (1 if positive else -1) * (-1 if negated else 1)
            at = rng.integers(0, len(words) + 1)
            words[at:at] = ["not", word] if negated else [word]
        if score:
            texts.append(" ".join(words))
            labels.append(int(score > 0))
    return np.array(texts), np.array(labels, np.int64)


def load_data(args):
    """``(train, test, source)``: unbatched datasets of (text, label)."""
    import tensorflow as tf

    cut = "" if args.max_examples is None else f"[:{args.max_examples}]"
    if args.download:
        print("downloading imdb_reviews if it is not prepared yet (80 MB)", flush=True)
    try:
        with utils.quiet_data("imdb_reviews", args.data_dir, generated=False):
            train, _ = keras_feedback.datasets.load_raw(
                "imdb_reviews",
                "train" + cut,
                data_dir=args.data_dir,
                shuffle=True,
                as_supervised=True,
                download=args.download,
            )
            test, _ = keras_feedback.datasets.load_raw(
                "imdb_reviews", "test" + cut, data_dir=args.data_dir, as_supervised=True
            )
        return train, test, "imdb_reviews"
    except keras_feedback.datasets.DatasetNotPreparedError as error:
        print(
            "imdb_reviews is not prepared there and --download was not given: "
            "using a SYNTHETIC stand-in (made-up reviews) instead. For the real "
            f"data: --download, or `{error.build_command}` on a machine with "
            "network."
        )
    n = args.synthetic_examples
    texts, labels = synthetic_reviews(n + n // 4, seed=0)
    print(
        f"SYNTHETIC reviews: {n} training and {n // 4} held-out (not IMDB); "
        f"e.g. {str(texts[0])!r} (label {labels[0]})"
    )
    train = tf.data.Dataset.from_tensor_slices((texts[:n], labels[:n]))
    test = tf.data.Dataset.from_tensor_slices((texts[n:], labels[n:]))
    return train, test, "synthetic reviews"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="default: 2 (IMDB), 6 (synthetic)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="words kept; default: 200 (IMDB), 40 (synthetic)",
    )
    parser.add_argument("--vocabulary-size", type=int, default=20000)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--feedback-units", type=int, default=16)
    parser.add_argument(
        "--max-examples",
        type=int,
        default=None,
        help="use at most this many reviews per split",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data folder")
    parser.add_argument(
        "--download",
        action="store_true",
        help="let TFDS download imdb_reviews (80 MB)",
    )
    parser.add_argument(
        "--synthetic-examples",
        type=int,
        default=4000,
        help="training reviews of the synthetic stand-in (a quarter more held out)",
    )
    utils.add_common_arguments(parser, "sentiment_imdb")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    train, test, source = load_data(args)
    synthetic = source.startswith("synthetic")
    if args.epochs is None:
        args.epochs = 6 if synthetic else 2
    if args.max_length is None:
        args.max_length = 40 if synthetic else 200
    vectorize = keras.layers.TextVectorization(
        args.vocabulary_size, output_sequence_length=args.max_length
    )
    vectorize.adapt(train.map(lambda text, label: text).batch(1024))

    def batches(ds):
        ds = ds.batch(args.batch_size)
        return ds.map(lambda text, label: (vectorize(text), label))

    model = keras.Sequential(
        [
            keras.Input((args.max_length,), dtype="int64"),
            keras.layers.Embedding(args.vocabulary_size, 64, mask_zero=True),
            keras_feedback.layers.Feedback(
                args.units,
                feedback_units=args.feedback_units,
                core="gru",
                attention=True,
            ),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(3e-3, clipnorm=1.0),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    before = model.evaluate(batches(test), verbose=0, return_dict=True)
    history = model.fit(
        batches(train.shuffle(10_000, seed=0)),
        epochs=args.epochs,
        validation_data=batches(test),
        shuffle=False,
        verbose=2,
    )
    after = model.evaluate(batches(test), verbose=0, return_dict=True)
    print(f"held-out ({source}) accuracy before training: {before['accuracy']:.3f}")
    baseline = utils.majority_accuracy(
        [int(y) for _, y in train.as_numpy_iterator()],
        [int(y) for _, y in test.as_numpy_iterator()],
    )
    result = utils.report(
        f"accuracy ({source})",
        after["accuracy"],
        baseline,
        "always predicting the most frequent training label",
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
            "majority label",
        )
    return {
        **result,
        "source": source,
        "loss_before": before["loss"],
        "loss_after": after["loss"],
        "accuracy": after["accuracy"],
    }


if __name__ == "__main__":
    try:
        main()
    except keras_feedback.datasets.DatasetNotPreparedError as error:
        raise SystemExit(str(error))
