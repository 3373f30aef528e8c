"""A character-level language model: a feedback model predicts the next byte.

Builds the ``char_text`` TFDS dataset from the ``.txt`` files of a folder
(default: a corpus made of keras_feedback's own source code), trains
``Embedding`` -> ``Feedback`` -> ``Dense`` to predict each next byte, reports
bits per character and samples some text.

    python examples/char_language_model.py --text-dir my_texts --steps 3000
"""

import argparse
import hashlib
import os

import keras
import numpy as np

import keras_feedback


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    parser.add_argument("--out", default=os.path.join("keras_feedback_out", "char_lm"))
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
    model.fit(
        train.repeat(),
        steps_per_epoch=max(1, args.steps // epochs),
        epochs=epochs,
        shuffle=False,
        verbose=2,
    )
    after = model.evaluate(test, verbose=0)
    print(
        f"test bits per character: before {before / np.log(2):.3f}, "
        f"after {after / np.log(2):.3f}"
    )
    text = _sample(model, "def ", args.sample, args.length, np.random.default_rng(0))
    print("sample:\n" + text)
    return {"loss_before": before, "loss_after": after, "sample": text}


if __name__ == "__main__":
    main()
