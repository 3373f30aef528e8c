"""A character-level language model: a feedback model predicts the next byte.

Builds the ``char_text`` TFDS dataset from the ``.txt`` files of a folder
(default: a corpus made of keras_feedback's own source code), trains
``Embedding`` -> ``Feedback`` -> ``Dense`` to predict each next byte, reports
bits per character on the held-out test split beside the trivial baseline
(the training bytes' unigram distribution), and samples some text.

    python examples/char_language_model.py
    python examples/char_language_model.py --text-dir my_texts --steps 3000
"""

import argparse
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _example_utils as utils  # noqa: E402  (before TensorFlow: quiet start)
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_feedback  # noqa: E402

EPILOG = """\
data: the .txt files of --text-dir (default: keras_feedback's own Python
  source, about 1 MB), built into the TFDS dataset char_text under --out
  (no download).
runtime at defaults: about 5 min on a 2-core CPU.
trivial baseline: the training bytes' unigram distribution (each byte's
  frequency), scored on the held-out test split in bits per character.
writes: learning_curve.png and the dataset into --out."""


def _default_corpus(folder):
    """keras_feedback's Python source as one .txt file in ``folder``."""
    root = os.path.dirname(keras_feedback.__file__)
    sources = sorted(
        os.path.join(d, f)
        for d, _, files in os.walk(root)
        for f in files
        if f.endswith(".py")
    )
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "keras_feedback_source.txt"), "wb") as out:
        for path in sources:
            with open(path, "rb") as f:
                out.write(f.read())
    return folder


def _sample(model, prompt, length, window, rng, temperature=0.7):
    data = list(prompt.encode("utf-8"))
    for _ in range(length):
        # Left-padded with spaces to a fixed window: one compiled shape.
        context = ([32] * window + data)[-window:]
        probs = model.predict(np.array([context]), verbose=0)[0, -1]
        logits = np.log(np.maximum(probs, 1e-9)) / temperature
        p = np.exp(logits - logits.max())
        data.append(int(rng.choice(256, p=p / p.sum())))
    return bytes(data).decode("utf-8", errors="replace")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--text-dir",
        default=None,
        help="folder of .txt files (default: keras_feedback's source)",
    )
    parser.add_argument("--length", type=int, default=128, choices=[64, 128, 256])
    parser.add_argument("--steps", type=int, default=3000, help="training steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--feedback-units", type=int, default=32)
    parser.add_argument("--sample", type=int, default=300, help="bytes to generate")
    utils.add_common_arguments(parser, "char_lm")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    text_dir = args.text_dir or _default_corpus(os.path.join(args.out, "corpus"))
    digest = hashlib.sha1()
    for name in sorted(os.listdir(text_dir)):
        if name.endswith(".txt"):
            with open(os.path.join(text_dir, name), "rb") as f:
                digest.update(f.read())
    # TFDS keeps a built dataset: one data folder per corpus.
    data_dir = os.path.join(args.out, "tfds-" + digest.hexdigest()[:12])
    name = f"char_text/L{args.length}"
    load = dict(data_dir=data_dir, manual_dir=text_dir, batch_size=args.batch_size)
    with utils.quiet_data(name, data_dir):
        train, task = keras_feedback.datasets.load(name, "train", shuffle=True, **load)
        test, _ = keras_feedback.datasets.load(name, "test", **load)

    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(task.input_size, 32),
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
        keras.optimizers.Adam(3e-3, clipnorm=1.0), "sparse_categorical_crossentropy"
    )
    before = model.evaluate(test, verbose=0)
    epochs = max(1, args.steps // 500)
    history = model.fit(
        train.repeat(),
        steps_per_epoch=max(1, args.steps // epochs),
        epochs=epochs,
        validation_data=test,
        shuffle=False,
        verbose=2,
    )
    after = model.evaluate(test, verbose=0)
    baseline = utils.unigram_cross_entropy(
        utils.targets_of(train, limit=20_000),
        utils.targets_of(test),
        task.num_classes,
        per_position=False,
    )
    bits = 1 / np.log(2)
    print(
        f"held-out (test split) bits per character before training: {before * bits:.3f}"
    )
    result = utils.report(
        "bits per character",
        after * bits,
        baseline * bits,
        "the training bytes' unigram distribution",
    )
    if not args.no_plot:
        utils.plot_curves(
            os.path.join(args.out, "learning_curve.png"),
            {
                "training": [v * bits for v in history.history["loss"]],
                "held-out": [v * bits for v in history.history["val_loss"]],
            },
            "bits per character",
            baseline * bits,
            "unigram baseline",
        )
    text = _sample(model, "def ", args.sample, args.length, np.random.default_rng(0))
    print("sample:\n" + text)
    return {**result, "loss_before": before, "loss_after": after, "sample": text}


if __name__ == "__main__":
    main()
