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

import json
import os
import sys
import time

HELP = (
    "Train a model described by a JSON file on a TFDS dataset with a "
    "sequence, text or image feature (offline)."
)

EXIT_ERROR = 2  # exit status: the dataset is not prepared, or bad input
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
        type=int,
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
        help="folder the trained model.keras is saved to",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
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
    return {**_TRAINING_KEYS, **config}


def build_model(task, config):
    """A compiled Keras model for ``task`` (a ``SequenceTask``) from ``config``."""
    import keras

    import keras_feedback

    if "model" in config:
        model = keras.models.model_from_json(json.dumps(config["model"]))
    else:
        tokens = task.input_kind in ("tokens", "text")
        if tokens:
            inputs = keras.Input((task.time_steps,), dtype="int32", name="x")
            hidden = keras.layers.Embedding(
                task.input_size,
                int(config.get("embedding_dim") or 32),
                mask_zero=task.input_kind == "text",
                name="embedding",
            )(inputs)
        else:
            inputs = keras.Input((task.time_steps, task.input_size), name="x")
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


def run(args):
    import keras

    from keras_feedback import datasets
    from keras_feedback.training import distribute

    try:
        config = read_config(args.model)
    except ConfigError as error:
        print(f"keras-feedback train: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    strategy = None
    if getattr(args, "distributed", False):
        # Before any other TensorFlow operation: a multi-worker strategy
        # configures the runtime.
        try:
            strategy = distribute.strategy_from_environment()
            distribute.per_replica_batch_size(int(config["batch_size"]), strategy)
        except ValueError as error:
            print(f"keras-feedback train: error: {error}", file=sys.stderr)
            return EXIT_ERROR
    keras.utils.set_random_seed(args.seed)
    load = dict(
        data_dir=args.data_dir,
        batch_size=int(config["batch_size"]),
        max_length=args.max_length,
        download=args.download,
        manual_dir=args.manual_dir,
        seed=args.seed,
    )
    try:
        train, task = datasets.load(
            args.dataset, args.train_split, shuffle=True, **load
        )
        evaluation, _ = datasets.load(args.dataset, args.eval_split, **load)
    except datasets.DatasetNotPreparedError as error:
        print(f"keras-feedback train: {error}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as error:
        print(f"keras-feedback train: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    if strategy is not None:
        train = distribute.shard_by_data(train)
        evaluation = distribute.shard_by_data(evaluation)
    try:
        if strategy is None:
            model = build_model(task, config)
        else:
            with strategy.scope():
                model = build_model(task, config)
    except (ConfigError, ValueError) as error:
        print(f"keras-feedback train: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(
        f"{task.name}: {task.input_kind} input '{task.input_key}' "
        f"({task.time_steps} steps x {task.input_size}), target "
        f"'{task.target_key}' ({task.loss}); {model.count_params():,} parameters"
    )
    steps = config["steps_per_epoch"]
    start = time.perf_counter()
    model.fit(
        train.repeat() if steps else train,
        epochs=int(config["epochs"]),
        steps_per_epoch=steps,
        shuffle=False,
        verbose=1,
    )
    seconds = time.perf_counter() - start
    results = model.evaluate(evaluation, verbose=0, return_dict=True)
    os.makedirs(args.out, exist_ok=True)
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
    return 0
