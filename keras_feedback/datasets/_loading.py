"""Any TFDS dataset with a sequence, text or image feature, as batches of
``(sequence, target)`` for a recurrent model; offline by default."""

import dataclasses
import os
from typing import Optional
from typing import Tuple
from typing import Union

import tensorflow as tf
import tensorflow_datasets as tfds

from keras_feedback._api import public
from keras_feedback.datasets import _common

INPUT_KINDS = ("values", "tokens", "text", "image")
# Text is read as UTF-8 bytes shifted by one: 0 is left for padding.
TEXT_VOCABULARY_SIZE = 257
_SHUFFLE_BUFFER = 10_000


@public("keras_feedback.datasets.DatasetNotPreparedError", serializable=False)
class DatasetNotPreparedError(FileNotFoundError):
    """A dataset's files are not in the data folder and downloading is off.

    Attributes:
        name: the dataset, as given to ``load``.
        data_dir: the data folder that was searched.
        build_command: the ``tfds build`` command that prepares the dataset
            (run it on a machine with network access, then copy the folder).
    """

    def __init__(
        self,
        name: str,
        data_dir: Union[str, os.PathLike],
        build_command: str,
        manual: bool = False,
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.build_command = build_command
        where = (
            "Build it from your files (it needs no network)"
            if manual
            else "Prepare it on a machine with network access, then copy that "
            "folder here"
        )
        super().__init__(
            f"Dataset {name!r} is not prepared in {data_dir} (keras_feedback "
            f"does not download datasets unless asked to). {where}:\n\n"
            f"    {build_command}\n"
        )


@public("keras_feedback.datasets.SequenceTask", serializable=False)
@dataclasses.dataclass(frozen=True)
class SequenceTask:
    """What ``keras_feedback.datasets.load`` found out about a dataset.

    Attributes:
        name: the dataset's full name, with its config (``"mnist/3.0.1"``).
        input_key: the feature read as the input sequence.
        target_key: the feature read as the target.
        input_kind: how the input became a sequence: ``"values"`` (float
            features per step), ``"tokens"`` (class labels per step),
            ``"text"`` (UTF-8 bytes + 1, 0 pads), ``"image"`` (rows are steps,
            pixels scaled to [0, 1]).
        input_size: features per step (values, image) or vocabulary size
            (tokens, text).
        time_steps: the sequence length (fixed: variable-length inputs are
            cut and left-padded to ``max_length``).
        num_classes: number of classes, or None for a regression target.
        target_size: outputs per prediction (``num_classes`` or the size of
            a regression target).
        per_step: whether there is a target at every step (else one per
            sequence).
        baseline_loss: the loss of the trivial predictor, when the dataset
            defines one (built-in tasks), else None.
    """

    name: str
    input_key: str
    target_key: str
    input_kind: str
    input_size: int
    time_steps: int
    num_classes: Optional[int]
    target_size: int
    per_step: bool
    baseline_loss: Optional[float] = None

    @property
    def loss(self):
        """The Keras loss name the target calls for."""
        if self.num_classes is None:
            return "mse"
        return "sparse_categorical_crossentropy"


def build_command(name, data_dir, builder):
    """The ``tfds build`` command that prepares ``name`` in ``data_dir``."""
    parts = ["tfds build", name]
    if type(builder).__module__.startswith("keras_feedback."):
        parts.append("--imports keras_feedback.datasets")
    if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
        parts.append("--manual_dir YOUR_TEXT_DIR")
    parts.append(f"--data_dir {data_dir}")
    return " ".join(parts)


def _builder(name, data_dir):
    if not isinstance(name, str) or not name:
        raise ValueError(f"Argument `name` must be a TFDS dataset name, got {name!r}")
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Argument `name`: no TFDS dataset is registered as {name!r} "
            "(see `tfds.list_builders()`)"
        ) from None


def _is_sequence_of(feature, kinds):
    return isinstance(feature, tfds.features.Sequence) and isinstance(
        feature.feature, kinds
    )


def _pick_keys(info, input_key, target_key):
    features = info.features
    if input_key is None and target_key is None and info.supervised_keys:
        input_key, target_key = info.supervised_keys[:2]
    names = sorted(features.keys())
    if input_key is None:
        candidates = [
            k
            for k in names
            if isinstance(
                features[k],
                (tfds.features.Image, tfds.features.Text, tfds.features.Sequence),
            )
            or (
                isinstance(features[k], tfds.features.Tensor)
                and len(features[k].shape) >= 1
            )
        ]
        input_key = candidates[0] if candidates else None
    if target_key is None:
        labels = [
            k
            for k in names
            if k != input_key and isinstance(features[k], tfds.features.ClassLabel)
        ]
        target_key = labels[0] if labels else None
    for argument, key in (("input_key", input_key), ("target_key", target_key)):
        if key is None or key not in features:
            raise ValueError(
                f"Argument `{argument}`: cannot tell which feature of "
                f"{info.full_name!r} to use, got {key!r}; its features are "
                f"{names}"
            )
    return input_key, target_key


def _numeric_kind(dtype):
    return "tokens" if tf.as_dtype(dtype).is_integer else "values"


def _describe_input(feature, key, max_length):
    """``(kind, size, time_steps, to_sequence)`` of the input feature."""
    if isinstance(feature, tfds.features.Image):
        height, width, channels = feature.shape
        if height is None or width is None:
            raise ValueError(
                f"Input feature {key!r}: images of varying size are not "
                f"supported, got shape {feature.shape}"
            )

        def image(x):
            return tf.reshape(tf.cast(x, tf.float32) / 255.0, [height, -1])

        return "image", width * (channels or 1), height, image
    if isinstance(feature, tfds.features.Text):

        def text(x):
            tokens = tf.cast(tf.io.decode_raw(x, tf.uint8), tf.int32) + 1
            return _left_pad(tokens[:max_length], max_length)

        return "text", TEXT_VOCABULARY_SIZE, max_length, text
    if _is_sequence_of(feature, tfds.features.ClassLabel):
        size = feature.feature.num_classes
        return _as_steps("tokens", size, feature.shape, key, max_length)
    if isinstance(feature, (tfds.features.Tensor, tfds.features.Sequence)):
        shape = tuple(feature.shape)
        kind = _numeric_kind(feature.tf_dtype)
        if kind == "tokens":
            raise ValueError(
                f"Input feature {key!r} holds integers of unknown vocabulary "
                f"size (declare it as a Sequence(ClassLabel)), got {feature!r}"
            )
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] is None):
            raise ValueError(
                f"Input feature {key!r} must be a (time,) or (time, features) "
                f"sequence, got shape {shape}"
            )
        size = shape[1] if len(shape) == 2 else 1
        return _as_steps("values", size, shape, key, max_length)
    raise ValueError(
        f"Input feature {key!r} is not a sequence, text or image, got {feature!r}"
    )


def _left_pad(x, length):
    pad = length - tf.shape(x)[0]
    paddings = [[pad, 0]] + [[0, 0]] * (x.shape.rank - 1)
    return tf.pad(x, paddings)


def _as_steps(kind, size, shape, key, max_length):
    time = shape[0]
    dtype = tf.int32 if kind == "tokens" else tf.float32

    def convert(x):
        x = tf.cast(x, dtype)
        if kind == "values" and x.shape.rank == 1:
            x = x[:, None]
        if time is None:
            x = _left_pad(x[:max_length], max_length)
        return x

    return kind, size, time or max_length, convert


def _describe_target(feature, key, input_time):
    """``(num_classes, target_size, per_step, to_target)`` of the target."""
    if isinstance(feature, tfds.features.ClassLabel):
        return feature.num_classes, feature.num_classes, False, _cast(tf.int32)
    if _is_sequence_of(feature, tfds.features.ClassLabel):
        if feature.shape[0] != input_time or input_time is None:
            raise ValueError(
                f"Target feature {key!r}: per-step targets need the input's "
                f"fixed length {input_time}, got shape {feature.shape}"
            )
        size = feature.feature.num_classes
        return size, size, True, _cast(tf.int32)
    if isinstance(feature, tfds.features.Tensor) and len(feature.shape) <= 1:
        if not feature.tf_dtype.is_floating:
            raise ValueError(
                f"Target feature {key!r} holds integers without a number of "
                f"classes (declare it as a ClassLabel), got {feature!r}"
            )
        size = feature.shape[0] if feature.shape else 1
        return None, size, False, _cast(tf.float32)
    raise ValueError(
        f"Target feature {key!r} must be a ClassLabel, a Sequence(ClassLabel) "
        f"or a float scalar or vector, got {feature!r}"
    )


def _cast(dtype):
    return lambda y: tf.cast(y, dtype)


def check_positive(name, value, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        none = " or None" if allow_none else ""
        raise ValueError(
            f"Argument `{name}` must be a positive integer{none}, got {value!r}"
        )


def _check_split(split, builder):
    """Refuses a split expression that names no split or selects nothing.

    TFDS accepts ``"test[5:2]"`` and fails only when the dataset is read.
    """
    if not isinstance(split, str):
        raise TypeError(
            f"Argument `split` must be a TFDS split string such as 'test' or "
            f"'train[:10%]', got {split!r}"
        )
    splits = builder.info.splits
    if not splits:
        return  # not prepared yet: as_dataset reports it
    try:
        examples = splits[split].num_examples
    except (ValueError, KeyError, AssertionError) as error:
        raise ValueError(
            f"Argument `split`: {split!r} is not a split of {builder.name} "
            f"(splits: {sorted(splits)}): {error}"
        ) from None
    if examples < 1:
        raise ValueError(
            f"Argument `split`: {split!r} selects no examples of "
            f"{builder.name} ({examples}); expected a non-empty split such as "
            f"'test' or 'train[:10%]' (slices run start:stop, start < stop)"
        )


@public("keras_feedback.datasets.load_raw", serializable=False)
def load_raw(
    name: str,
    split: str = "train",
    *,
    data_dir: Union[str, os.PathLike, None] = None,
    shuffle: bool = False,
    seed: int = 0,
    download: bool = False,
    manual_dir: Union[str, os.PathLike, None] = None,
    as_supervised: bool = False,
) -> Tuple[tf.data.Dataset, tfds.core.DatasetBuilder]:
    """Opens a TFDS dataset offline, with a clear error when it is missing.

    The built-in tasks (``adding_problem``, ``copy_memory``) are generated
    into ``data_dir`` on first use; ``char_text`` is built from
    ``manual_dir``; any other dataset must already be prepared there
    (``download=True`` lets TFDS download it).

    Args:
        name: TFDS name, optionally with config and version.
        split: TFDS split, e.g. ``"test"`` or ``"train[:10%]"``.
        data_dir: the TFDS data folder; None: TFDS's default
            (``~/tensorflow_datasets``).
        shuffle: bool, shuffle the files (seeded).
        seed: int, seed of the file shuffling.
        download: bool, let TFDS download a dataset that is not prepared.
        manual_dir: folder of the files of a manually built dataset
            (``char_text``); it is then built (no network needed).
        as_supervised: bool, yield ``(input, target)`` tuples of the
            dataset's supervised keys instead of feature dicts.

    Returns:
        ``(dataset, builder)``: the ``tf.data.Dataset`` of TFDS examples and
        the TFDS builder (``builder.info`` describes the features).

    Raises:
        keras_feedback.datasets.DatasetNotPreparedError: the dataset is not
            in ``data_dir`` and ``download`` is False. Its message holds the
            ``tfds build`` command that prepares it.
    """
    builder = _builder(name, data_dir)
    if isinstance(builder, _common.LocalBuilder) or download or manual_dir:
        config = None
        if manual_dir is not None:
            config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
        builder.download_and_prepare(download_config=config)
    _check_split(split, builder)
    try:
        dataset = builder.as_dataset(
            split=split,
            shuffle_files=bool(shuffle),
            read_config=tfds.ReadConfig(shuffle_seed=seed),
            as_supervised=as_supervised,
        )
    except AssertionError:
        # Raised by TFDS when the dataset's files are not in data_dir.
        root = data_dir or builder.data_dir_root
        manual = bool(getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None))
        raise DatasetNotPreparedError(
            name, root, build_command(name, root, builder), manual=manual
        ) from None
    return dataset, builder


@public("keras_feedback.datasets.load", serializable=False)
def load(
    name: str,
    split: str = "train",
    *,
    data_dir: Union[str, os.PathLike, None] = None,
    batch_size: Optional[int] = 32,
    shuffle: bool = False,
    seed: int = 0,
    max_length: int = 256,
    input_key: Optional[str] = None,
    target_key: Optional[str] = None,
    download: bool = False,
    manual_dir: Union[str, os.PathLike, None] = None,
) -> Tuple[tf.data.Dataset, SequenceTask]:
    """Loads a TFDS dataset as batches of ``(sequence, target)``.

    Works offline, as ``load_raw``. The input feature becomes a
    fixed-length sequence: float features per step, class labels per step
    (``Sequence(ClassLabel)``), text as UTF-8 bytes, or an image read row by
    row. The target is a class label (one per sequence or one per step) or
    a float scalar or vector.

    Args:
        name: TFDS name, optionally with config and version
            (``"adding_problem/T100"``, ``"mnist"``).
        split: TFDS split, e.g. ``"test"`` or ``"train[:512]"``.
        data_dir: the TFDS data folder; None: TFDS's default
            (``~/tensorflow_datasets``).
        batch_size: positive int, or None for unbatched examples.
        shuffle: bool, shuffle the files and the examples (seeded).
        seed: int, seed of the shuffling.
        max_length: positive int, length that text and variable-length
            sequences are cut to (keeping their start) and left-padded to.
        input_key, target_key: the features to use; default: the dataset's
            supervised keys, else the first sequence/text/image feature and
            the first class label.
        download: bool, let TFDS download a dataset that is not prepared.
        manual_dir: folder of the files of a manually built dataset
            (``char_text``); it is then built (no network needed).

    Returns:
        ``(dataset, task)``: a ``tf.data.Dataset`` of ``(inputs, targets)``
        and a ``keras_feedback.datasets.SequenceTask`` describing them.

    Raises:
        keras_feedback.datasets.DatasetNotPreparedError: the dataset is not
            in ``data_dir`` and ``download`` is False. Its message holds the
            ``tfds build`` command that prepares it.

    Example:

    >>> import keras_feedback
    >>> ds, task = keras_feedback.datasets.load(
    ...     "adding_problem/T100", "test", data_dir="data")  # doctest: +SKIP
    >>> task.input_size, task.time_steps, task.loss  # doctest: +SKIP
    (2, 100, 'mse')
    """
    check_positive("batch_size", batch_size, allow_none=True)
    check_positive("max_length", max_length)
    dataset, builder = load_raw(
        name,
        split,
        data_dir=data_dir,
        shuffle=shuffle,
        seed=seed,
        download=download,
        manual_dir=manual_dir,
    )
    info = builder.info
    input_key, target_key = _pick_keys(info, input_key, target_key)
    kind, size, time, to_sequence = _describe_input(
        info.features[input_key], input_key, max_length
    )
    num_classes, target_size, per_step, to_target = _describe_target(
        info.features[target_key], target_key, time
    )
    task = SequenceTask(
        name=info.full_name,
        input_key=input_key,
        target_key=target_key,
        input_kind=kind,
        input_size=size,
        time_steps=time,
        num_classes=num_classes,
        target_size=target_size,
        per_step=per_step,
        baseline_loss=getattr(builder.builder_config, "baseline_loss", None),
    )
    dataset = dataset.map(
        lambda ex: (to_sequence(ex[input_key]), to_target(ex[target_key])),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if shuffle:
        dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=seed)
    if batch_size is not None:
        dataset = dataset.batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE), task
