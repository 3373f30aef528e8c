"""Streaming inference with LiteRT: one time step per call, state held by the app.

Trains a small feedback model on the adding problem, exports its step model
to LiteRT (``export_litert(..., streaming=True)``; float32 or int8), then
runs it in the LiteRT interpreter the way a phone app would: one step per
``invoke``, the states fed back by the caller. After every step the output
is the model's answer "if the sequence ended now"; it is compared with the
Keras model run on whole sequences.

    python examples/streaming_litert.py --steps 1500 --quantization int8
"""

import argparse
import os
import time

import keras
import numpy as np
from ai_edge_litert.interpreter import Interpreter

import keras_feedback


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=50, choices=[50, 100, 200, 500])
    parser.add_argument("--steps", type=int, default=1500, help="training steps")
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--feedback-units", type=int, default=8)
    parser.add_argument("--quantization", choices=["none", "int8"], default="none")
    parser.add_argument(
        "--max-examples",
        type=int,
        default=None,
        help="use at most this many examples per split",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data folder")
    parser.add_argument(
        "--out", default=os.path.join("keras_feedback_out", "streaming")
    )
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    name = f"adding_problem/T{args.length}"
    cut = "" if args.max_examples is None else f"[:{args.max_examples}]"
    train, task = keras_feedback.datasets.load(
        name, "train" + cut, data_dir=args.data_dir, batch_size=64, shuffle=True
    )
    test, _ = keras_feedback.datasets.load(
        name, "test" + cut, data_dir=args.data_dir, batch_size=4
    )
    model = _model(task, args.units, args.feedback_units)
    model.compile(keras.optimizers.Adam(3e-3, clipnorm=1.0), "mse")
    model.fit(
        train.repeat(), steps_per_epoch=args.steps, epochs=1, shuffle=False, verbose=2
    )

    x, y = next(iter(test))
    x, y = x.numpy(), y.numpy()
    quantization = None if args.quantization == "none" else args.quantization
    path = keras_feedback.export.export_litert(
        model,
        os.path.join(args.out, f"step_{args.quantization}.tflite"),
        streaming=True,
        quantization=quantization,
        representative_data=x if quantization else None,
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
    print(f"median latency per step: {1e3 * np.median(seconds[1:]):.4f} ms")
    print(f"last step: LiteRT {np.round(streamed[:, -1], 3)}, target {np.round(y, 3)}")
    return {
        "max_abs_error": error,
        "streamed": streamed,
        "expected": expected,
        "final": streamed[:, -1],
        "keras_final": model.predict(x, verbose=0)[:, 0],
    }


if __name__ == "__main__":
    main()
