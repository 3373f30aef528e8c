"""FeedbackStack's speed against Keras's stacked layers of the same size.

Sequences per second of inference (``predict_on_batch``) and training
(``train_on_batch``, Adam, MSE on the top layer's last output) of two
stacked layers of H units at B=64, T=100, D=32, feedback off everywhere:

- Keras's stacked ``GRU``/``LSTM`` (compiled without and with
  ``jit_compile``, the better one kept);
- two ``Feedback`` layers (the library's engines, one layer at a time);
- ``FeedbackStack([H, H], top_down=None | "ungated" | "gated")`` (one
  recurrence over both layers' states, the fused engine).

Each row gives its ratio to Keras's figure, and the run measures the
machine's large fp32 matmul rate (``_limits.machine_limits``) so that runs
on different machines can be compared. The stack computes the upper
layer's projection and every recurrent product inside the step, and its
recurrent kernels' gradients step by step (docs/feedback_stack.md); the
two-``Feedback`` row shows what that costs against separate layers.

    python benchmarks/feedback_stack.py             # ~6 min on 2 cores
    python benchmarks/feedback_stack.py --quick     # a smoke run
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_feedback.layers import Feedback  # noqa: E402
from keras_feedback.layers import FeedbackStack  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _limits  # noqa: E402

ROWS = ("keras", "feedback", "stack_none", "stack_ungated", "stack_gated")
NAMES = {
    "keras": "Keras, 2 stacked layers",
    "feedback": "2 Feedback layers",
    "stack_none": "FeedbackStack, top_down=None",
    "stack_ungated": 'FeedbackStack, "ungated"',
    "stack_gated": 'FeedbackStack, "gated"',
}


def model(kind, core, units, steps, jit_compile):
    inputs = keras.Input((steps, 32))
    if kind == "keras":
        layer = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[core]
        outputs = layer(units)(layer(units, return_sequences=True)(inputs))
    elif kind == "feedback":
        h = Feedback(units, feedback_units=0, core=core, return_sequences=True)(inputs)
        outputs = Feedback(units, feedback_units=0, core=core)(h)
    else:
        top_down = {"stack_none": None, "stack_ungated": "ungated"}.get(kind, "gated")
        outputs = FeedbackStack(
            [units, units], core=core, top_down=top_down, engine="xla"
        )(inputs)
    result = keras.Model(inputs, outputs)
    result.compile(keras.optimizers.Adam(1e-4), "mse", jit_compile=jit_compile)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--units", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--cores", nargs="+", default=["gru", "lstm"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.quick:
        args.units, args.cores, args.steps, args.repeats = [16], ["gru"], 10, 1
    print(f"Machine: {_limits.machine()}")
    limits = _limits.machine_limits(args)
    best = max(r["large"] for r in limits if r["dtype"] == "float32")
    print("The machine's own limit, measured in this run")
    print("| large fp32 matmul, best kernel (GFLOP/s) |")
    print("|---:|")
    print(f"| {best:.0f} |")
    print()
    print(
        f"Two stacked layers, sequences/s (B={args.batch}, T={args.steps}, D=32, "
        "feedback off; Keras: best of jit_compile off/on)"
    )
    print("| core | H | mode | model | sequences/s | / Keras |")
    print("|---|---:|---|---|---:|---:|")
    rng = np.random.default_rng(0)
    for core in args.cores:
        for units in args.units:
            x = rng.normal(size=(args.batch, args.steps, 32)).astype("float32")
            y = np.zeros((args.batch, units), "float32")
            results = {}
            for kind in ROWS:
                figures = {"inference": 0.0, "training": 0.0}
                for jit in (False, True) if kind == "keras" else (False,):
                    m = model(kind, core, units, args.steps, jit)
                    infer = _limits.timed(
                        lambda m=m: m.predict_on_batch(x), args.repeats, 0.3
                    )
                    train = _limits.timed(
                        lambda m=m: m.train_on_batch(x, y), args.repeats, 0.3
                    )
                    figures["inference"] = max(figures["inference"], args.batch / infer)
                    figures["training"] = max(figures["training"], args.batch / train)
                results[kind] = figures
            for mode in ("inference", "training"):
                keras_rate = results["keras"][mode]
                for kind in ROWS:
                    rate = results[kind][mode]
                    print(
                        f"| {core} | {units} | {mode} | {NAMES[kind]} | {rate:.0f} "
                        f"| {rate / keras_rate:.2f}x |"
                    )
    print()


if __name__ == "__main__":
    main()
