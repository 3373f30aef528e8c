"""Quickstart: a feedback-recurrent regressor in a few lines.

Learns the running mean of a noisy sequence with a `Feedback` layer and
prints the loss before and after training, and the per-step feedback trace.

    python examples/quickstart.py --epochs 5
"""

import argparse

import keras
import numpy as np

import keras_feedback


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="sequence length")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.samples, args.steps, 1)).astype("float32")
    y = x.mean(axis=1)

    model = keras.Sequential(
        [
            keras.Input((None, 1)),
            keras_feedback.layers.Feedback(
                16, feedback_units=4, core="gru", attention=True
            ),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=args.epochs, batch_size=32, verbose=2)
    after = model.evaluate(x, y, verbose=0)
    print(f"MSE before training: {before:.4f}, after: {after:.4f}")

    tracer = keras_feedback.layers.Feedback(
        16, feedback_units=4, core="gru", attention=True, return_trace=True
    )
    tracer(x[:1])
    tracer.set_weights(model.layers[0].get_weights())
    _, trace = tracer(x[:1])
    for name, values in trace.items():
        print(
            f"trace[{name!r}]: shape {tuple(values.shape)}, "
            f"mean over time {float(values.numpy().mean()):.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
