"""``keras-feedback diagnose``: vanishing or exploding gradients through time?

Loads a saved ``.keras`` model, takes one batch of data and prints, for its
Feedback layer, ``‖∂L/∂h_t‖`` per time step, the step Jacobian norms and a
verdict: the figures of ``keras_feedback.training.GradientFlow.measure``.

    keras-feedback diagnose model.keras --data adding_problem/T100
    keras-feedback diagnose model.keras --data batch.npz --loss mse
"""

import numpy as np

from keras_feedback import _commands

HELP = (
    "Measure the gradient flow through time of a saved feedback model on a "
    "batch of data and print a vanishing/exploding verdict."
)
_TABLE_ROWS = 12


def add_arguments(parser):
    parser.add_argument("model", help="the saved model (.keras)")
    parser.add_argument(
        "--data",
        required=True,
        help="a .npz file with arrays x and y (or inputs and targets, or its "
        "first two arrays), or a TFDS name such as adding_problem/T100",
    )
    parser.add_argument("--split", default="test", help="TFDS split (default: test)")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory")
    parser.add_argument(
        "--batch-size",
        type=_commands.positive_int,
        default=32,
        help="examples in the batch (default 32)",
    )
    parser.add_argument("--layer", default=None, help="name of the Feedback layer")
    parser.add_argument(
        "--loss", default=None, help="loss when the model was saved uncompiled"
    )
    parser.add_argument(
        "--no-jacobian",
        action="store_true",
        help="skip the step Jacobian norms",
    )
    parser.add_argument("--json", default=None, help="also write the figures here")


def _npz(path, batch_size):
    archive = _commands.load_arrays("--data", path)
    if isinstance(archive, np.ndarray):
        raise _commands.UsageError(
            f"--data {path!r}: expected a .npz file with arrays x and y, got one "
            "array (.npy)"
        )
    keys = list(archive)
    for x_key, y_key in (("x", "y"), ("inputs", "targets")):
        if x_key in archive and y_key in archive:
            break
    else:
        if len(keys) < 2:
            raise _commands.UsageError(
                f"--data {path!r} must hold two arrays (x, y), got {keys}"
            )
        x_key, y_key = keys[:2]
    return archive[x_key][:batch_size], archive[y_key][:batch_size]


def _batch(args):
    if args.data.endswith(".npz"):
        return _npz(args.data, args.batch_size)
    import keras_feedback

    with _commands.flags_for({"name": "--data", "split": "--split"}):
        dataset, _ = keras_feedback.datasets.load(
            args.data, args.split, data_dir=args.data_dir, batch_size=args.batch_size
        )
    x, y = next(iter(dataset.take(1)))
    return x.numpy(), y.numpy()


def _check_batch(model, x, y, data):
    """The batch must fit the model's input and be finite numbers."""
    for name, value in (("x", x), ("y", y)):
        if not np.issubdtype(value.dtype, np.number):
            raise _commands.UsageError(
                f"--data {data!r}: {name} must be numeric, got dtype {value.dtype}"
            )
        bad = ~np.isfinite(value)
        if bad.any():
            raise _commands.UsageError(
                f"--data {data!r}: {name} has {int(bad.sum())} non-finite values "
                f"(NaN or Inf), the first at index "
                f"{tuple(int(i) for i in np.argwhere(bad)[0])}; expected finite data"
            )
    expected = tuple(model.inputs[0].shape) if len(model.inputs) == 1 else None
    if expected is not None and (
        x.ndim != len(expected)
        or not all(e is None or e == d for e, d in zip(expected[1:], x.shape[1:]))
    ):
        raise _commands.UsageError(
            f"--data {data!r}: x has shape {x.shape}, the model takes inputs of "
            f"shape {expected} (None: any size)"
        )
    if len(x) != len(y):
        raise _commands.UsageError(
            f"--data {data!r}: x has {len(x)} rows and y {len(y)}; expected one "
            "target row per input row"
        )


def _table(report):
    norms, jac = report.gradient_norms, report.jacobian_norms
    steps = len(norms)
    shown = sorted(set(np.linspace(0, steps - 1, min(steps, _TABLE_ROWS)).astype(int)))
    lines = ["     t | |dL/dh_t|   | |ds_t/ds_t-1|"]
    for t in shown:
        j = "-" if jac is None else f"{jac[t]:.4g}"
        lines.append(f"{t:>6} | {norms[t]:<11.4g} | {j}")
    return "\n".join(lines)


def run(args):
    import keras_feedback

    _commands.input_file("model", args.model)
    if args.json:
        _commands.output_file("--json", args.json)
    model = _commands.load_keras_model("model", args.model)
    x, y = _batch(args)
    _check_batch(model, x, y, args.data)
    report = keras_feedback.training.GradientFlow.measure(
        model, x, y, layer=args.layer, jacobian=not args.no_jacobian, loss=args.loss
    )
    print(f"model: {args.model} ({model.name}), batch of {len(x)} from {args.data}")
    print(_table(report))
    print(report.summary())
    if args.json:
        from keras_feedback.export import json_report

        figures = {
            "gradient_norms": report.gradient_norms,
            "jacobian_norms": report.jacobian_norms,
            "ratio": report.ratio,
            "rate": report.rate,
            "verdict": report.verdict,
        }
        with open(args.json, "w") as f:  # non-finite figures as "inf"/"nan"
            f.write(json_report(figures, indent=2))
    return 0
