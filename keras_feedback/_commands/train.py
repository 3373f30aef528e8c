"""``keras-feedback train``: trains a model described by a JSON file on any
TFDS dataset with a sequence, text or image feature.

The model file is a JSON object. Either a ``Feedback`` stack that the
command completes for the dataset (an embedding for tokens and text, the
output layer for the target)::

    {
      "feedback": {"units": 64, "feedback_units": 16, "core": "gru"},
      "embedding_dim": 32,
      "learning_rate": 0.003,
      "clipnorm": 1.0,
      "batch_size": 64,
      "epochs": 2,
      "steps_per_epoch": null
    }

(``"feedback"`` may also be a list of layer configs, stacked), or a whole
Keras model under ``"model"`` (what ``model.to_json()`` writes, parsed),
with the same training keys. The dataset is read offline; when it is not
prepared in the data folder the command prints the ``tfds build`` command
to run on a machine with network access and exits with status 2.
"""

import contextlib
import json
import math
import os
import re
import time

from keras_feedback import _commands

HELP = (
    "Train a model described by a JSON file on a TFDS dataset with a "
    "sequence, text or image feature (offline)."
)

EXIT_ERROR = _commands.EXIT_USAGE  # the dataset is not prepared, or bad input
_TRAINING_KEYS = {
    "learning_rate": 3e-3,
    "clipnorm": 1.0,
    "batch_size": 64,
    "epochs": 1,
    "steps_per_epoch": None,
}
_MODEL_KEYS = ("feedback", "model", "embedding_dim")


def add_arguments(parser):
    parser.add_argument(
        "--dataset",
        required=True,
        help="TFDS dataset name, e.g. adding_problem/T100, mnist, imdb_reviews",
    )
    parser.add_argument(
        "--model",
        required=True,
        help='JSON file: {"feedback": {Feedback layer arguments} or a list of '
        'them, or "model": a Keras model config; optional "embedding_dim", '
        '"learning_rate", "clipnorm", "batch_size", "epochs", '
        '"steps_per_epoch"}',
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="TFDS data folder (default: TFDS's, ~/tensorflow_datasets)",
    )
    parser.add_argument("--train-split", default="train", help="default: train")
    parser.add_argument("--eval-split", default="test", help="default: test")
    parser.add_argument(
        "--max-length",
        type=_commands.positive_int,
        default=256,
        help="length texts and variable-length sequences are cut/padded to",
    )
    parser.add_argument(
        "--manual-dir",
        default=None,
        help="folder of your files, for manually built datasets (char_text)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="let TFDS download a dataset that is not prepared (needs network)",
    )
    parser.add_argument(
        "--out",
        default=os.path.join("keras_feedback_out", "train"),
        help="folder of the trained model.keras, the checkpoints "
        "(OUT/checkpoints/epoch_NNN.keras, one per epoch) and the TensorBoard "
        "logs (OUT/logs: tensorboard --logdir OUT/logs)",
    )
    parser.add_argument(
        "--epochs",
        type=_commands.positive_int,
        default=None,
        help='epochs to train (default: the model file\'s "epochs", else 1)',
    )
    parser.add_argument(
        "--batch-size",
        type=_commands.positive_int,
        default=None,
        help='batch size (default: the model file\'s "batch_size", else 64)',
    )
    parser.add_argument(
        "--validation-split",
        type=_commands.fraction,
        default=None,
        help="hold out this fraction of the training split (whole percent, "
        "its end) and report the validation loss after every epoch",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in OUT/checkpoints (the model "
        "and its optimizer state), at the epoch after it",
    )
    parser.add_argument(
        "--seed", type=_commands.non_negative_int, default=0, help="random seed"
    )
    parser.add_argument(
        "--qat-epochs",
        type=_commands.positive_int,
        default=None,
        help="after training, fine-tune a quantization-aware copy of the model "
        "for this many epochs (docs/quantization.md) and save it as "
        "OUT/model_qat.keras: its int8 LiteRT export (keras-feedback export "
        "--quantize int8 --streaming) takes the ranges from training",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="train under the tf.distribute strategy the environment calls "
        "for: MultiWorkerMirroredStrategy when TF_CONFIG is set, "
        "MirroredStrategy over several local devices (docs/distributed.md); "
        "batch_size is then the global batch",
    )


class ConfigError(ValueError):
    """The model file is not a valid model description."""


def read_config(path):
    """The model file as a dict of model and training settings, checked."""
    try:
        with open(path) as f:
            config = json.load(f)
    except OSError as error:
        raise ConfigError(f"cannot read the model file {path!r}: {error}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"the model file {path!r} is not JSON: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError(
            f"the model file must hold a JSON object, got {type(config).__name__}"
        )
    unknown = sorted(set(config) - set(_MODEL_KEYS) - set(_TRAINING_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown keys {unknown} in the model file; expected some of "
            f"{sorted(_MODEL_KEYS + tuple(_TRAINING_KEYS))}"
        )
    if ("feedback" in config) == ("model" in config):
        raise ConfigError(
            'the model file must have exactly one of "feedback" (layer '
            'configs) and "model" (a Keras model config)'
        )
    layers = config.get("feedback")
    if layers is not None:
        layers = layers if isinstance(layers, list) else [layers]
        if not layers or not all(isinstance(layer, dict) for layer in layers):
            raise ConfigError(
                f'"feedback" must be an object or a list of objects, got {layers!r}'
            )
        config["feedback"] = layers
    config = {**_TRAINING_KEYS, **config}
    _check_number(config, "learning_rate", float)
    _check_number(config, "clipnorm", float, allow_none=True)
    for key in ("batch_size", "epochs"):
        _check_number(config, key, int)
    for key in ("steps_per_epoch", "embedding_dim"):
        _check_number(config, key, int, allow_none=True)
    return config


def _check_number(config, key, kind, allow_none=False):
    value = config.get(key)
    if value is None and (allow_none or key not in config):
        return
    good = not isinstance(value, bool) and isinstance(value, (int, float))
    if good and kind is int:
        good = isinstance(value, int) or float(value).is_integer()
    if good:
        good = math.isfinite(value) and value > 0
    if not good:
        what = "a positive integer" if kind is int else "a positive number"
        none = " or null" if allow_none else ""
        raise ConfigError(f'"{key}" must be {what}{none}, got {value!r}')
    config[key] = kind(value)


def check_model(config):
    """Builds the layers the model file describes, without data, so that a
    typo fails before any dataset is read or generated."""
    import keras

    import keras_feedback

    if "model" in config:
        try:
            model = keras.models.model_from_json(json.dumps(config["model"]))
        except Exception as error:  # Keras raises many error types here
            raise ConfigError(
                f'"model" is not a Keras model config: {type(error).__name__}: '
                f"{_commands.one_line(error, 300)}"
            ) from None
        if not isinstance(model, keras.Model):
            raise ConfigError(
                '"model" is not a Keras model config (what model.to_json() '
                'writes, with "class_name" and "config"): it describes a '
                f"{type(model).__name__}, not a keras.Model"
            )
        return
    for i, layer_config in enumerate(config["feedback"]):
        try:
            keras_feedback.layers.Feedback(**layer_config)
        except (TypeError, ValueError) as error:
            raise ConfigError(f'"feedback"[{i}]: {error}') from None


def build_model(task, config):
    """A compiled Keras model for ``task`` (a ``SequenceTask``) from ``config``."""
    import keras

    import keras_feedback

    if "model" in config:
        model = keras.models.model_from_json(json.dumps(config["model"]))
    else:
        tokens = task.input_kind in ("tokens", "text")
        if tokens:
            inputs = keras.Input((None,), dtype="int32", name="x")
            hidden = keras.layers.Embedding(
                task.input_size,
                int(config.get("embedding_dim") or 32),
                mask_zero=task.input_kind == "text",
                name="embedding",
            )(inputs)
        else:
            inputs = keras.Input((None, task.input_size), name="x")
            hidden = inputs
        layers = config["feedback"]
        for i, layer_config in enumerate(layers):
            last = i == len(layers) - 1
            layer_config = {
                "return_sequences": task.per_step or not last,
                "name": f"feedback_{i}",
                **layer_config,
            }
            try:
                layer = keras_feedback.layers.Feedback(**layer_config)
            except (TypeError, ValueError) as error:
                raise ConfigError(f'"feedback"[{i}]: {error}') from None
            hidden = layer(hidden)
        activation = None if task.num_classes is None else "softmax"
        # A scalar target keeps its (batch, 1) output (the loss matches it to
        # (batch,) targets): on (batch,) outputs Keras's mean squared error
        # skips its division by the replica count under tf.distribute, which
        # multiplies the gradients by it (docs/distributed.md).
        outputs = keras.layers.Dense(task.target_size, activation, name="y")(hidden)
        model = keras.Model(inputs, outputs, name="feedback_model")
    metrics = [] if task.num_classes is None else ["sparse_categorical_accuracy"]
    model.compile(
        optimizer=keras.optimizers.Adam(
            float(config["learning_rate"]), clipnorm=config["clipnorm"]
        ),
        loss=task.loss,
        metrics=metrics,
    )
    return model


_CHECKPOINT = re.compile(r"epoch_(\d+)\.keras$")


def _last_checkpoint(folder):
    """``(epoch, path)`` of the newest checkpoint in ``folder``, or None."""
    found = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            match = _CHECKPOINT.fullmatch(name)
            if match:
                found.append((int(match.group(1)), os.path.join(folder, name)))
    return max(found) if found else None


def _splits(args):
    """The training and validation splits (validation None without a split)."""
    if args.validation_split is None:
        return args.train_split, None
    if "[" in args.train_split or "+" in args.train_split:
        raise _commands.UsageError(
            f"--validation-split slices --train-split itself, which must then be "
            f"a plain split name, got --train-split {args.train_split!r}"
        )
    percent = round(100 * args.validation_split)
    if not 1 <= percent <= 99:
        raise _commands.UsageError(
            f"--validation-split {args.validation_split}: the held-out part is "
            f"a whole percent of the split (1 to 99), got {percent}%"
        )
    split = args.train_split
    return f"{split}[:{100 - percent}%]", f"{split}[{100 - percent}%:]"


def _check_arguments(args, config):
    """Every check that reads no data, before the data is prepared."""
    _commands.output_folder("--out", args.out, create=True)
    path = os.path.join(args.out, "model.keras")
    if os.path.isdir(path):
        raise _commands.UsageError(f"--out: {path!r} is a folder; the model goes there")
    if args.epochs is not None:
        config["epochs"] = args.epochs
    if args.batch_size is not None:
        config["batch_size"] = args.batch_size
    if getattr(args, "qat_epochs", None) and getattr(args, "distributed", False):
        raise _commands.UsageError(
            "--qat-epochs cannot be combined with --distributed: fine-tune "
            "the saved model on one machine"
        )
    resume = None
    if args.resume:
        resume = _last_checkpoint(os.path.join(args.out, "checkpoints"))
        if resume is None:
            raise _commands.UsageError(
                f"--resume: no checkpoint (epoch_NNN.keras) in "
                f"{os.path.join(args.out, 'checkpoints')!r}"
            )
    return _splits(args), resume


def _callbacks(out):
    import keras

    checkpoints = os.path.join(out, "checkpoints")
    os.makedirs(checkpoints, exist_ok=True)
    return [
        keras.callbacks.ModelCheckpoint(
            os.path.join(checkpoints, "epoch_{epoch:03d}.keras")
        ),
        keras.callbacks.TensorBoard(os.path.join(out, "logs")),
    ]


def run(args):
    try:
        config = read_config(args.model)
    except ConfigError as error:
        raise _commands.UsageError(f"--model {args.model!r}: {error}") from None
    try:
        check_model(config)
    except ConfigError as error:
        raise _commands.UsageError(f"--model {args.model!r}: {error}") from None
    # After the model's check: a refused model leaves no --out folder behind.
    (train_split, validation_split), resume = _check_arguments(args, config)
    return _train(args, config, train_split, validation_split, resume)


def _train(args, config, train_split, validation_split, resume):
    import keras

    from keras_feedback import datasets
    from keras_feedback.training import distribute

    strategy = None
    if getattr(args, "distributed", False):
        # Before any other TensorFlow operation: a multi-worker strategy
        # configures the runtime.
        strategy = distribute.strategy_from_environment()
        distribute.per_replica_batch_size(int(config["batch_size"]), strategy)
    keras.utils.set_random_seed(args.seed)
    load = dict(
        data_dir=args.data_dir,
        batch_size=int(config["batch_size"]),
        max_length=args.max_length,
        download=args.download,
        manual_dir=args.manual_dir,
        seed=args.seed,
    )
    flags = {
        "name": "--dataset",
        "data_dir": "--data-dir",
        "max_length": "--max-length",
    }
    with _commands.flags_for({**flags, "split": "--train-split"}):
        train, task = datasets.load(args.dataset, train_split, shuffle=True, **load)
    with _commands.flags_for({**flags, "split": "--eval-split"}):
        evaluation, _ = datasets.load(args.dataset, args.eval_split, **load)
    validation = None
    if validation_split is not None:
        with _commands.flags_for({**flags, "split": "--validation-split"}):
            validation, _ = datasets.load(args.dataset, validation_split, **load)
    if strategy is not None:
        train = distribute.shard_by_data(train)
        evaluation = distribute.shard_by_data(evaluation)
        if validation is not None:
            validation = distribute.shard_by_data(validation)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    initial_epoch = 0
    with scope:
        try:
            if resume is None:
                model = build_model(task, config)
            else:
                initial_epoch, path = resume
                model = _commands.load_keras_model("--resume", path)
        except ConfigError as error:
            raise _commands.UsageError(f"--model {args.model!r}: {error}") from None
    qat_epochs = getattr(args, "qat_epochs", None)
    if qat_epochs:
        # Before training: a model QAT cannot take fails now, not after it.
        _check_quantizable(model)
    print(
        f"{task.name}: {task.input_kind} input '{task.input_key}' "
        f"({task.time_steps} steps x {task.input_size}), target "
        f"'{task.target_key}' ({task.loss}); {model.count_params():,} parameters"
    )
    if resume is not None:
        print(f"resuming after epoch {initial_epoch} from {resume[1]}")
    steps = config["steps_per_epoch"]
    epochs = int(config["epochs"])
    start = time.perf_counter()
    if initial_epoch < epochs:
        model.fit(
            train.repeat() if steps else train,
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            validation_data=validation,
            callbacks=_callbacks(args.out),
            shuffle=False,
            verbose=1,
        )
    else:
        print(
            f"nothing to train: the checkpoint is at epoch {initial_epoch} of {epochs}"
        )
    seconds = time.perf_counter() - start
    results = model.evaluate(evaluation, verbose=0, return_dict=True)
    path = os.path.join(args.out, "model.keras")
    if strategy is None:
        model.save(path)
    else:
        distribute.save_model(model, path, strategy)  # every task calls it
    scores = ", ".join(f"{k} {v:.4f}" for k, v in results.items())
    print(f"{args.eval_split}: {scores}")
    if task.baseline_loss is not None:
        print(f"baseline loss (trivial predictor): {task.baseline_loss:.4f}")
    print(f"trained in {seconds:.1f} s; model saved to {os.path.abspath(path)}")
    if qat_epochs:
        data = (train, evaluation, validation)
        _fine_tune_qat(args, config, model, task, data, qat_epochs)
    return 0


def _check_quantizable(model):
    from keras_feedback.quantization import _qat

    try:
        _qat.check_layers(model)
    except ValueError as error:
        message = str(error).replace("Argument `model`", "the model")
        raise _commands.UsageError(f"--qat-epochs: {message}") from None


# Training batches whose inputs set (and move) the QAT ranges.
_QAT_RANGE_BATCHES = 4


def _fine_tune_qat(args, config, model, task, data, epochs):
    """A quantization-aware copy of ``model`` fine-tuned for ``epochs``
    epochs at a tenth of the learning rate, saved as OUT/model_qat.keras."""
    import keras

    from keras_feedback import quantization

    train, evaluation, validation = data
    ranges = [x for x, _ in train.take(_QAT_RANGE_BATCHES)]
    qat = quantization.quantize_model(model, lambda: ranges)
    qat.compile(
        optimizer=keras.optimizers.Adam(
            float(config["learning_rate"]) / 10, clipnorm=config["clipnorm"]
        ),
        loss=task.loss,
        metrics=[] if task.num_classes is None else ["sparse_categorical_accuracy"],
    )
    steps = config["steps_per_epoch"]
    start = time.perf_counter()
    qat.fit(
        train.repeat() if steps else train,
        epochs=epochs,
        steps_per_epoch=steps,
        validation_data=validation,
        callbacks=[quantization.UpdateRanges(lambda: ranges, every=100)],
        shuffle=False,
        verbose=1,
    )
    seconds = time.perf_counter() - start
    results = qat.evaluate(evaluation, verbose=0, return_dict=True)
    path = os.path.join(args.out, "model_qat.keras")
    qat.save(path)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in results.items())
    print(f"{args.eval_split} (quantization-aware, int8 rounding): {scores}")
    print(
        f"QAT fine-tuned {epochs} epoch(s) in {seconds:.1f} s; saved to "
        f"{os.path.abspath(path)} (export it with --quantize int8 --streaming)"
    )
