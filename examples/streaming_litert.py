"""Streaming inference with LiteRT: one time step per call, state held by the app.

Trains a small feedback model on the adding problem, exports its step model
to LiteRT (``export_litert(..., streaming=True)``; float32 or int8), then
runs it in the LiteRT interpreter the way a phone app would: one step per
``invoke``, the states fed back by the caller. After every step the output
is the model's answer "if the sequence ended now"; it is compared with the
Keras model run on whole sequences. The answers after the last step are
scored on held-out sequences beside the trivial baseline; int8 is calibrated
on training sequences, never on the ones it is tested on.

    python examples/streaming_litert.py
    python examples/streaming_litert.py --quantization int8
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _example_utils as utils  # noqa: E402  (before TensorFlow: quiet start)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

import keras_feedback  # noqa: E402

EPILOG = """\
data: the built-in TFDS dataset adding_problem/T<length>, generated locally
  (no download) into --data-dir (default ~/tensorflow_datasets) on first use;
  --test-examples held-out sequences are streamed.
runtime at defaults: about 1 min on a 2-core CPU (int8: a little more).
trivial baseline: always predicting the training targets' mean, scored on
  the streamed held-out sequences (MSE about 0.167).
writes: step_<quantization>.tflite and stream.png into --out."""


def _model(task, units, feedback_units, return_sequences=False):
    return keras.Sequential(
        [
            keras.Input((None, task.input_size), name="x"),
            keras_feedback.layers.Feedback(
                units,
                feedback_units=feedback_units,
                core="gru",
                return_sequences=return_sequences,
                name="feedback",
            ),
            keras.layers.Dense(1, name="y"),
        ]
    )


def plot_stream(x, y, streamed, expected, quantization, path):
    """One held-out sequence: its marked values, and the answer after every
    step from LiteRT and from Keras."""
    plt = utils.pyplot()
    figure, axes = plt.subplots(figsize=(7, 3.5))
    steps = np.arange(1, len(streamed) + 1)
    axes.plot(steps, expected, label="Keras, whole sequence", linewidth=3, alpha=0.5)
    axes.plot(steps, streamed, label=f"LiteRT stream ({quantization})", marker=".")
    axes.axhline(y, color="grey", linestyle="--", label="target (the sum)")
    for t in np.flatnonzero(x[:, 1]):
        axes.axvline(t + 1, color="red", alpha=0.3)
    axes.set_xlabel("time step (red: the marked values)")
    axes.set_ylabel("answer so far")
    axes.legend()
    utils.save(figure, path)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--length", type=int, default=50, choices=[50, 100, 200, 500])
    parser.add_argument("--steps", type=int, default=1500, help="training steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--feedback-units", type=int, default=8)
    parser.add_argument("--quantization", choices=["none", "int8"], default="none")
    parser.add_argument(
        "--max-examples",
        type=int,
        default=None,
        help="use at most this many examples per split",
    )
    parser.add_argument(
        "--test-examples", type=int, default=64, help="held-out sequences streamed"
    )
    parser.add_argument(
        "--calibration-examples",
        type=int,
        default=256,
        help="training sequences that calibrate int8",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data folder")
    utils.add_common_arguments(parser, "streaming")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    name = f"adding_problem/T{args.length}"
    cut = "" if args.max_examples is None else f"[:{args.max_examples}]"
    with utils.quiet_data(name, args.data_dir):
        train, task = keras_feedback.datasets.load(
            name,
            "train" + cut,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            shuffle=True,
        )
        test, _ = keras_feedback.datasets.load(
            name, "test" + cut, data_dir=args.data_dir, batch_size=args.test_examples
        )
    model = _model(task, args.units, args.feedback_units)
    model.compile(keras.optimizers.Adam(3e-3, clipnorm=1.0), "mse")
    epochs = max(1, args.steps // 250)
    model.fit(
        train.repeat(),
        steps_per_epoch=max(1, args.steps // epochs),
        epochs=epochs,
        shuffle=False,
        verbose=2,
    )

    x, y = next(iter(test))
    x, y = x.numpy(), y.numpy()
    quantization = None if args.quantization == "none" else args.quantization
    calibration = None
    if quantization:
        calibration = np.concatenate(
            [
                np.asarray(b)
                for b, _ in train.take(-(-args.calibration_examples // args.batch_size))
            ]
        )[: args.calibration_examples]
    with utils.quiet_stderr(not utils.VERBOSE):
        path = keras_feedback.export.export_litert(
            model,
            os.path.join(args.out, f"step_{args.quantization}.tflite"),
            streaming=True,
            quantization=quantization,
            representative_data=calibration,
            overwrite=True,
        )

    # The app's side: the interpreter, one step per call, states fed back.
    runner = Interpreter(model_path=path).get_signature_runner("step")
    state_names = [n for n in runner.get_input_details() if n != "x"]
    states = {
        n: np.zeros((len(x), d["shape_signature"][-1]), np.float32)
        for n, d in runner.get_input_details().items()
        if n in state_names
    }
    streamed, seconds = [], []
    # Quiet: LiteRT says "INFO: Created TensorFlow Lite XNNPACK delegate".
    with utils.quiet_stderr(not utils.VERBOSE):
        for t in range(x.shape[1]):
            start = time.perf_counter()
            result = runner(x=np.ascontiguousarray(x[:, t]), **states)
            seconds.append(time.perf_counter() - start)
            states = {n: result[n] for n in state_names}
            streamed.append(result["y"][:, 0])
    streamed = np.stack(streamed, axis=1)

    # Keras: the same weights, an output after every step.
    every_step = _model(task, args.units, args.feedback_units, return_sequences=True)
    every_step.set_weights(model.get_weights())
    expected = every_step.predict(x, verbose=0)[..., 0]
    error = float(np.max(np.abs(streamed - expected)))
    print(f"{path}: {os.path.getsize(path) / 1024:.1f} KiB, states {state_names}")
    print(f"max |LiteRT stream - Keras| over {x.shape[1]} steps: {error:.2e}")
    print(
        f"median latency per step ({len(x)} sequences per call): "
        f"{1e3 * np.median(seconds[1:]):.4f} ms"
    )
    print(
        f"first 4 held-out sequences, last step: LiteRT "
        f"{np.round(streamed[:4, -1], 3)}, target {np.round(y[:4], 3)}"
    )
    mse = float(np.mean((streamed[:, -1] - y) ** 2))
    baseline = utils.mse_of_mean(utils.targets_of(train, limit=10_000), y)
    result = utils.report(
        f"MSE of the LiteRT stream ({args.quantization}) after the last step",
        mse,
        baseline,
        "always predicting the training mean",
    )
    if not args.no_plot:
        plot_stream(
            x[0],
            y[0],
            streamed[0],
            expected[0],
            args.quantization,
            os.path.join(args.out, "stream.png"),
        )
    return {
        **result,
        "max_abs_error": error,
        "streamed": streamed,
        "expected": expected,
        "final": streamed[:, -1],
        "keras_final": model.predict(x, verbose=0)[:, 0],
    }


if __name__ == "__main__":
    main()
