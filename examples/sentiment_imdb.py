"""Sentiment analysis of IMDB reviews with a feedback model over words.

Reads ``imdb_reviews`` from TFDS (it must be prepared in the data folder;
on a machine with network access run ``tfds build imdb_reviews --data_dir
DIR`` and copy DIR here), turns each review into word ids with Keras's
``TextVectorization``, and classifies it with ``Embedding(mask_zero=True)``
-> ``Feedback`` -> ``Dense``: the padding is masked, so the feedback state
after the last word decides.

    python examples/sentiment_imdb.py --data-dir ~/tensorflow_datasets
"""

import argparse

import keras

import keras_feedback


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=200, help="words kept")
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
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    cut = "" if args.max_examples is None else f"[:{args.max_examples}]"
    train, _ = keras_feedback.datasets.load_raw(
        "imdb_reviews",
        "train" + cut,
        data_dir=args.data_dir,
        shuffle=True,
        as_supervised=True,
    )
    test, _ = keras_feedback.datasets.load_raw(
        "imdb_reviews", "test" + cut, data_dir=args.data_dir, as_supervised=True
    )
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
    model.fit(
        batches(train.shuffle(10_000, seed=0)),
        epochs=args.epochs,
        validation_data=batches(test),
        shuffle=False,
        verbose=2,
    )
    after = model.evaluate(batches(test), verbose=0, return_dict=True)
    print(
        f"test accuracy before training {before['accuracy']:.3f}, "
        f"after {after['accuracy']:.3f} (loss {after['loss']:.4f})"
    )
    return {
        "loss_before": before["loss"],
        "loss_after": after["loss"],
        "accuracy": after["accuracy"],
    }


if __name__ == "__main__":
    try:
        main()
    except keras_feedback.datasets.DatasetNotPreparedError as error:
        raise SystemExit(str(error))
