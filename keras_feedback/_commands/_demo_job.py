"""What ``keras-feedback demo`` runs (its arguments are in ``demo``)."""

import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from matplotlib.figure import Figure

import keras_feedback
from keras_feedback import datasets
from keras_feedback import export
from keras_feedback import quantization
from keras_feedback._commands.demo import FLOAT_TOLERANCE
from keras_feedback._commands.demo import INT8_RELATIVE_TOLERANCE

_EVAL_EXAMPLES = 1000
_INT8_EVAL_EXAMPLES = 256
# Validation sequences that set (and move) the QAT ranges and calibrate
# the post-training int8 file.
_CALIBRATION_EXAMPLES = 256


@dataclasses.dataclass(frozen=True)
class _Recipe:
    """How the demo trains on one family of tasks."""

    goal: str  # what "solved" means, for the table
    goal_factor: float  # solved: test loss < baseline * goal_factor
    units: int
    feedback_units: int
    learning_rate: float
    steps: int
    batch_size: int
    per_step: bool
    input_labels: tuple  # names of the input features, for the trace figure


_RECIPES = {
    "adding_problem": _Recipe(
        goal="test MSE < 0.01",
        goal_factor=0.06,  # 1/6 * 0.06 = 0.01
        units=32,
        feedback_units=8,
        learning_rate=3e-3,
        steps=2000,
        batch_size=64,
        per_step=False,
        input_labels=("value", "marker"),
    ),
    "copy_memory": _Recipe(
        goal="test cross-entropy < baseline / 10",
        goal_factor=0.1,
        units=128,
        feedback_units=32,
        learning_rate=1e-2,
        steps=5000,
        batch_size=128,
        per_step=True,
        input_labels=("blank", *"12345678", "delimiter"),
    ),
}


def _split(name, max_examples):
    return name if max_examples is None else f"{name}[:{max_examples}]"


def _numpy_split(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


def _build_model(task, recipe):
    features = task.input_size
    inputs = keras.Input((None, features), name="x")
    feedback = keras_feedback.layers.Feedback(
        recipe.units,
        feedback_units=recipe.feedback_units,
        core="gru",
        attention=True,
        return_sequences=recipe.per_step,
        name="feedback",
    )
    hidden = feedback(inputs)
    if task.num_classes is None:
        outputs = keras.layers.Dense(task.target_size, name="y")(hidden)
        if task.target_size == 1:
            outputs = keras.layers.Reshape((), name="sum")(outputs)
    else:
        outputs = keras.layers.Dense(task.num_classes, activation="softmax", name="y")(
            hidden
        )
    return keras.Model(inputs, outputs, name="feedback_demo"), feedback


def _trace(feedback, x):
    """h, c and α of ``feedback`` (trained) over the sequences ``x``."""
    config = feedback.get_config()
    config.update(return_trace=True, name="trace")
    tracer = keras_feedback.layers.Feedback.from_config(config)
    tracer(x)
    tracer.set_weights(feedback.get_weights())
    *_, trace = tracer(x)
    return {k: v.numpy() for k, v in trace.items()}


class _LossLog(keras.callbacks.Callback):
    """Keeps the training loss Keras reports after every step."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def _plot_learning_curve(path, losses, val_steps, val_losses, baseline, goal, title):
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="0.75", lw=0.8, label="training (running mean)")
    ax.plot(val_steps, val_losses, "o-", color="C0", label="validation")
    ax.axhline(baseline, color="C3", ls="--", label=f"baseline {baseline:.3g}")
    ax.axhline(goal, color="C2", ls=":", label=f"goal {goal:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, f))
        for root, _, files in os.walk(path)
        for f in files
    )


def _format_bytes(size):
    if size >= 1 << 20:
        return f"{size / (1 << 20):.2f} MiB"
    return f"{size / 1024:.1f} KiB"


def _table(rows):
    width = max(len(k) for k, _ in rows)
    lines = [f"  {k.ljust(width)}  {v}" for k, v in rows]
    rule = "  " + "-" * max(len(line) for line in lines)
    return "\n".join([rule, *lines, rule])


def _load(args, recipe, data_dir):
    """Train, validation and test data; token inputs become one-hot vectors."""

    def split(name, shuffle=False):
        dataset, task = datasets.load(
            args.task,
            _split(name, args.max_examples),
            data_dir=data_dir,
            batch_size=recipe.batch_size,
            shuffle=shuffle,
            seed=args.seed,
        )
        if task.input_kind == "tokens":
            size = task.input_size
            dataset = dataset.map(lambda x, y: (tf.one_hot(x, size), y))
            task = dataclasses.replace(task, input_kind="values")
        return dataset, task

    train, task = split("train", shuffle=True)
    validation, _ = split("validation")
    test, _ = split("test")
    val = _numpy_split(validation.unbatch().take(_EVAL_EXAMPLES).batch(500))
    return train, val, _numpy_split(test), task


def _fine_tune_qat(model, train, calibration, recipe, steps, loss):
    """The quantization-aware copy of ``model`` fine-tuned for ``steps``
    steps (its ranges moved every 100 steps), and the seconds it took."""
    qat = quantization.quantize_model(model, calibration)
    qat.compile(
        optimizer=keras.optimizers.Adam(recipe.learning_rate / 10, clipnorm=1.0),
        loss=loss,
    )
    start = time.perf_counter()
    qat.fit(
        train.repeat(),
        steps_per_epoch=steps,
        epochs=1,
        callbacks=[quantization.UpdateRanges(calibration, every=100)],
        shuffle=False,
        verbose=0,
    )
    return qat, time.perf_counter() - start


def _export_and_verify(model, qat, out, inputs, calibration):
    """Writes every export into ``out``; returns name -> (path, report)."""
    saved_model_dir = os.path.join(out, "saved_model")
    export.export_saved_model(model, saved_model_dir, overwrite=True)
    reports = {
        "SavedModel": (
            os.path.join(saved_model_dir, "1"),
            export.verify_saved_model(model, saved_model_dir, inputs),
        )
    }
    int8 = {"quantization": "int8", "streaming": True}
    for name, filename, source, options in (
        ("LiteRT float32", "model_float32", model, {}),
        ("LiteRT float32 step", "model_float32_step", model, {"streaming": True}),
        # Quantization-aware: the ranges come from training, no calibration.
        ("LiteRT int8 step (QAT)", "model_int8_step", qat, int8),
        (
            "LiteRT int8 step (post-training)",
            "model_int8_step_ptq",
            model,
            {**int8, "representative_data": calibration},
        ),
    ):
        path = os.path.join(out, filename + ".tflite")
        export.export_litert(source, path, overwrite=True, **options)
        reports[name] = (path, export.verify_litert(source, path, inputs[:4]))
    return reports


def _streamed_loss(path, x, y, loss, per_step):
    """Task loss of a LiteRT step model run one step at a time on ``x``."""
    runner = Interpreter(model_path=path).get_signature_runner("step")
    details = runner.get_input_details()
    states = {
        name: np.zeros((len(x), d["shape_signature"][-1]), np.float32)
        for name, d in details.items()
        if name != "x"
    }
    outputs = []
    for t in range(x.shape[1]):
        result = runner(x=np.ascontiguousarray(x[:, t]), **states)
        states = {name: result[name] for name in states}
        outputs.append(result["y"])
    predictions = np.stack(outputs, axis=1) if per_step else outputs[-1]
    if loss == "mse":
        predictions = np.reshape(predictions, y.shape)
    values = keras.losses.get(loss)(y, predictions)
    return float(np.mean(keras.ops.convert_to_numpy(values)))


def _summary_rows(reports):
    """Table rows of the exports, and whether they are within the bounds."""
    path, saved = reports["SavedModel"]
    rows = [
        ("SavedModel size", _format_bytes(_size(path))),
        ("SavedModel serving error", f"{saved['serving_max_abs_error']:.2e} max abs"),
        ("SavedModel step error", f"{saved['step_max_abs_error']:.2e} max abs"),
    ]
    float_errors = [saved["serving_max_abs_error"], saved["step_max_abs_error"]]
    int8_errors = []
    for name, (path, report) in reports.items():
        if name == "SavedModel":
            continue
        if "int8" in name:
            int8_errors.append(report["max_rel_error"])
            error = f"{report['max_rel_error']:.2e} max rel"
            if report["float_error"] is not None:
                # The QAT file against the fake-quantised model it was made
                # from; against the float model too.
                error += (
                    f" (QAT model); {report['float_error']['max_rel_error']:.2e}"
                    " against the float model"
                )
        else:
            float_errors.append(report["max_abs_error"])
            error = f"{report['max_abs_error']:.2e} max abs"
        latency = f"{report['step_latency_ms']:.4f} ms per step"
        rows += [
            (f"{name} size", _format_bytes(report["size_bytes"])),
            (f"{name} error", error),
            (f"{name} latency", latency),
        ]
    float_ok = all(e is not None and e <= FLOAT_TOLERANCE for e in float_errors)
    int8_ok = bool(int8_errors) and all(
        e is not None and e <= INT8_RELATIVE_TOLERANCE for e in int8_errors
    )
    rows.append(
        (
            "parity",
            f"float {'OK' if float_ok else 'FAILED'} (<= {FLOAT_TOLERANCE:g} abs), "
            f"int8 {'OK' if int8_ok else 'FAILED'} "
            f"(<= {INT8_RELATIVE_TOLERANCE:g} rel)",
        )
    )
    return rows, float_ok and int8_ok


def run(args):
    recipe = _RECIPES[args.task.split("/")[0]]
    steps = args.steps or recipe.steps
    out = os.path.abspath(args.out)
    data_dir = args.data_dir or os.path.join(out, "tensorflow_datasets")
    os.makedirs(out, exist_ok=True)
    print(f"keras-feedback {keras_feedback.__version__} demo: {args.task}")
    print(f"Output folder: {out}")
    keras.utils.set_random_seed(args.seed)

    print(f"Preparing {args.task} in {data_dir} (generated locally) ...")
    train, (x_val, y_val), (x_test, y_test), task = _load(args, recipe, data_dir)
    baseline = task.baseline_loss
    goal = baseline * recipe.goal_factor
    model, feedback = _build_model(task, recipe)
    model.compile(
        optimizer=keras.optimizers.Adam(recipe.learning_rate, clipnorm=1.0),
        loss=task.loss,
    )
    evaluations = min(10, steps)
    per_epoch = steps // evaluations
    steps = per_epoch * evaluations
    log = _LossLog()
    print(
        f"Training {model.count_params():,} parameters for {steps} steps (batch "
        f"{recipe.batch_size}); baseline loss {baseline:.4f}, goal: {recipe.goal}"
    )
    start = time.perf_counter()
    history = model.fit(
        train.repeat(),
        steps_per_epoch=per_epoch,
        epochs=evaluations,
        validation_data=(x_val, y_val),
        callbacks=[log],
        shuffle=False,
        verbose=1,
    )
    train_seconds = time.perf_counter() - start
    test_loss = float(model.evaluate(x_test, y_test, batch_size=500, verbose=0))

    keras_path = os.path.join(out, "model.keras")
    model.save(keras_path)
    print(f"Quantization-aware fine-tuning for {args.qat_steps} steps ...")
    qat, qat_seconds = _fine_tune_qat(
        model,
        train,
        x_val[:_CALIBRATION_EXAMPLES],
        recipe,
        args.qat_steps,
        task.loss,
    )
    qat.save(os.path.join(out, "model_qat.keras"))
    print("Exporting and verifying ...")
    reports = _export_and_verify(model, qat, out, x_test[:16], x_val[:32])
    export_rows, exports_ok = _summary_rows(reports)
    evaluation = (
        x_test[:_INT8_EVAL_EXAMPLES],
        y_test[:_INT8_EVAL_EXAMPLES],
        task.loss,
        task.per_step,
    )
    float_streamed = _streamed_loss(reports["LiteRT float32 step"][0], *evaluation)
    int8_loss = _streamed_loss(reports["LiteRT int8 step (QAT)"][0], *evaluation)
    ptq_loss = _streamed_loss(
        reports["LiteRT int8 step (post-training)"][0], *evaluation
    )

    curve_path = os.path.join(out, "learning_curve.png")
    _plot_learning_curve(
        curve_path,
        log.losses,
        [per_epoch * (i + 1) for i in range(evaluations)],
        history.history["val_loss"],
        baseline,
        goal,
        f"{args.task}: {task.loss} of a Feedback model",
    )
    trace_path = os.path.join(out, "feedback_trace.png")
    trace = _trace(feedback, x_test[:1])
    keras_feedback.training.plot_trace(
        trace,
        x_test[:1],
        title=f"{args.task}: feedback trace of test sequence 0",
        input_labels=recipe.input_labels,
    ).savefig(trace_path, dpi=120)

    metric = "MSE" if task.num_classes is None else "cross-entropy"
    reached = "reached" if test_loss < goal else "NOT reached"
    rows = [
        ("task", f"{args.task} ({task.time_steps} steps)"),
        (f"test {metric}", f"{test_loss:.5f}  ({reached}: {recipe.goal})"),
        (f"baseline {metric}", f"{baseline:.5f}  (trivial predictor)"),
        (
            f"LiteRT float32 test {metric}",
            f"{float_streamed:.5f}  (streamed, first {_INT8_EVAL_EXAMPLES} "
            "test sequences)",
        ),
        (
            f"LiteRT int8 test {metric}, QAT",
            f"{int8_loss:.5f}  ({int8_loss / float_streamed:.2f}x float)",
        ),
        (
            f"LiteRT int8 test {metric}, post-training",
            f"{ptq_loss:.5f}  ({ptq_loss / float_streamed:.2f}x float)",
        ),
        ("training time", f"{train_seconds:.1f} s for {steps} steps"),
        (
            "QAT fine-tuning time",
            f"{qat_seconds:.1f} s for {args.qat_steps} steps",
        ),
        ("parameters", f"{model.count_params():,}"),
        ("Keras model size", _format_bytes(_size(keras_path))),
        *export_rows,
        ("learning curve", curve_path),
        ("feedback trace", trace_path),
    ]
    print(_table(rows))
    if test_loss >= goal:
        print(
            f"demo: the goal ({recipe.goal}) was NOT reached: test {metric} "
            f"{test_loss:.5f}; train longer (--steps) or on more examples"
        )
    if not exports_ok:
        print("demo: an export is further from Keras than its bound (parity row)")
    return 0 if exports_ok and test_loss < goal else 1
