"""Quickstart: a feedback-recurrent regressor in a few lines.

Learns the mean of a noisy sequence of 20 values with a `Feedback` layer,
then scores it on held-out sequences it never saw, beside the trivial
baseline (always predicting the training targets' mean), and draws the
per-step feedback trace (h, c and the attention gate α) of one sequence.
Data: generated in numpy (no download). About 30 s on 2 CPU cores.

    python examples/quickstart.py
    python examples/quickstart.py --epochs 40
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
data: uniform random sequences made in numpy, 1024 for training and 256
  held out (no download).
runtime at defaults: about 30 s on a 2-core CPU.
trivial baseline: always predicting the training targets' mean (the held-out
  MSE of that constant is the targets' variance, about 0.004).
writes: learning_curve.png and trace.png into --out."""


def _layer(**kwargs):
    return keras_feedback.layers.Feedback(
        16, feedback_units=4, core="gru", attention=True, **kwargs
    )


def plot_trace(trace, x, path):
    """h, c and α of one sequence, step by step, as heat maps."""
    plt = utils.pyplot()
    names = [n for n in ("h", "c", "alpha") if n in trace]
    figure, axes = plt.subplots(len(names) + 1, 1, figsize=(7, 6), sharex=True)
    axes[0].plot(x[0, :, 0], marker=".")
    axes[0].set_ylabel("input")
    for ax, name in zip(axes[1:], names):
        ax.imshow(np.asarray(trace[name][0]).T, aspect="auto", cmap="viridis")
        ax.set_ylabel(name)
    axes[-1].set_xlabel("time step")
    utils.save(figure, path)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=1024, help="training sequences")
    parser.add_argument("--steps", type=int, default=20, help="sequence length")
    utils.add_common_arguments(parser, "quickstart")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    held_out = max(args.samples // 4, 1)
    x = rng.uniform(size=(args.samples + held_out, args.steps, 1)).astype("float32")
    y = x.mean(axis=1)
    x_train, y_train, x_test, y_test = (
        x[:-held_out],
        y[:-held_out],
        x[-held_out:],
        y[-held_out:],
    )
    print(
        f"data: {len(x_train)} training and {len(x_test)} held-out sequences "
        f"of {args.steps} uniform values (numpy); target: their mean"
    )

    model = keras.Sequential([keras.Input((None, 1)), _layer(), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    before = model.evaluate(x_test, y_test, verbose=0)
    history = model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=32,
        validation_data=(x_test, y_test),
        verbose=2,
    )
    after = model.evaluate(x_test, y_test, verbose=0)
    print(f"held-out MSE before training: {before:.4f}")
    baseline = utils.mse_of_mean(y_train, y_test)
    result = utils.report("MSE", after, baseline, "always predicting the training mean")

    tracer = _layer(return_trace=True)
    tracer(x_test[:1])
    tracer.set_weights(model.layers[0].get_weights())
    _, trace = tracer(x_test[:1])
    for name, values in trace.items():
        print(
            f"trace[{name!r}]: shape {tuple(values.shape)}, "
            f"mean over time {float(values.numpy().mean()):.3f}"
        )
    if not args.no_plot:
        utils.plot_curves(
            os.path.join(args.out, "learning_curve.png"),
            {
                "training MSE": history.history["loss"],
                "held-out MSE": history.history["val_loss"],
            },
            "MSE",
            baseline,
            "always predicting the training mean",
        )
        plot_trace(
            {k: v.numpy() for k, v in trace.items()},
            x_test[:1],
            os.path.join(args.out, "trace.png"),
        )
    return {**result, "mse_before": before}


if __name__ == "__main__":
    main()
