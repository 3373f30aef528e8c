"""Row-by-row MNIST: a feedback model reads a digit one pixel row at a time.

Each 28x28 image is a sequence of 28 steps of 28 pixels; the feedback state
after the last row classifies the digit. Reads ``mnist`` from TFDS (it must
be prepared in the data folder; on a machine with network access run
``tfds build mnist --data_dir DIR`` and copy DIR here).

    python examples/mnist_rows.py --data-dir ~/tensorflow_datasets --epochs 3
"""

import argparse

import keras

import keras_feedback


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--feedback-units", type=int, default=16)
    parser.add_argument(
        "--max-examples",
        type=int,
        default=None,
        help="use at most this many images per split",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data folder")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    cut = "" if args.max_examples is None else f"[:{args.max_examples}]"
    train, task = keras_feedback.datasets.load(
        "mnist",
        "train" + cut,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        shuffle=True,
    )
    test, _ = keras_feedback.datasets.load(
        "mnist", "test" + cut, data_dir=args.data_dir, batch_size=1000
    )
    print(f"{task.name}: {task.time_steps} rows of {task.input_size} pixels")

    model = keras.Sequential(
        [
            keras.Input((task.time_steps, task.input_size)),
            keras_feedback.layers.Feedback(
                args.units,
                feedback_units=args.feedback_units,
                core="gru",
                attention=True,
            ),
            keras.layers.Dense(task.num_classes, activation="softmax"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(3e-3, clipnorm=1.0),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    before = model.evaluate(test, verbose=0, return_dict=True)
    model.fit(train, epochs=args.epochs, validation_data=test, shuffle=False, verbose=2)
    after = model.evaluate(test, verbose=0, return_dict=True)
    print(
        f"test accuracy before training {before['accuracy']:.3f}, "
        f"after {after['accuracy']:.3f}"
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
