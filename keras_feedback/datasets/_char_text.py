"""A character-level language-modelling dataset built from the user's text.

The text comes from ``manual_dir`` (nothing is downloaded): every ``.txt``
file in it, in name order, read as UTF-8 bytes. Its first 90% is the
``train`` split, the next 5% ``validation`` and the last 5% ``test``, so no
window of one split overlaps another split's text.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from keras_feedback._api import public
from keras_feedback.datasets import _common

# Bytes: any text in any encoding fits, and the vocabulary is fixed before
# the text is read.
VOCABULARY_SIZE = 256
SPLIT_FRACTIONS = {"train": (0.0, 0.9), "validation": (0.9, 0.95), "test": (0.95, 1.0)}


def read_text(manual_dir):
    """The bytes of every ``.txt`` file in the folder ``manual_dir``."""
    path = epath.Path(manual_dir)
    files = sorted(path.glob("*.txt")) if path.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"char_text reads its text from `manual_dir`: put one or more .txt "
            f"files into {str(manual_dir)!r} (no .txt file found there)"
        )
    return b"\n".join(f.read_bytes() for f in files)


def windows(data, length, split, rng=None):
    """``(inputs, targets)`` windows of ``length`` bytes of ``split``'s text.

    ``train`` windows start at random offsets drawn from ``rng`` (as many
    windows as fit end to end); ``validation`` and ``test`` windows tile
    their text. ``targets`` are ``inputs`` shifted by one byte.
    """
    tokens = np.frombuffer(data, np.uint8)
    start, end = SPLIT_FRACTIONS[split]
    part = tokens[int(start * len(tokens)) : int(end * len(tokens))]
    count = (len(part) - 1) // length
    if count < 1:
        return np.zeros((0, length), np.int32), np.zeros((0, length), np.int32)
    if split == "train":
        offsets = np.sort(rng.integers(0, len(part) - length, count))
    else:
        offsets = np.arange(count) * length
    index = offsets[:, None] + np.arange(length + 1)
    chunks = part[index].astype(np.int32)
    return chunks[:, :-1], chunks[:, 1:]


@dataclasses.dataclass
class CharTextConfig(tfds.core.BuilderConfig):
    """A config of ``char_text``: the length of a window."""

    length: int = 128


def _config(length):
    return CharTextConfig(
        name=f"L{length}", description=f"Windows of {length} bytes.", length=length
    )


@public("keras_feedback.datasets.CharText", serializable=False)
class CharText(tfds.core.GeneratorBasedBuilder):
    """Character-level language modelling on a text file of your choice.

    Registered as ``char_text`` when ``keras_feedback`` is imported. The
    text is read from ``manual_dir``: every ``.txt`` file there, in name
    order. Configs ``L64``, ``L128`` and ``L256``: the window length. The
    first 90% of the text gives ``train`` (windows at offsets drawn with a
    fixed seed, as many as fit end to end), the next 5% ``validation`` and
    the last 5% ``test`` (tiled windows). TFDS keeps what it built in
    ``data_dir`` and does not look at ``manual_dir`` again: use one
    ``data_dir`` per text collection.

    Features: ``"inputs"``, ``L`` bytes as class labels in [0, 256), and
    ``"targets"``, the next byte of each step (both ``Sequence(ClassLabel)``,
    int64 when loaded). ``as_supervised=True``
    yields ``(inputs, targets)``.

    Example:

    >>> import keras_feedback, tensorflow_datasets as tfds
    >>> builder = tfds.builder("char_text/L128", data_dir="data")
    >>> builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
    ...     manual_dir="my_texts"))  # doctest: +SKIP
    >>> ds = builder.as_dataset(split="train", as_supervised=True)  # doctest: +SKIP
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put one or more UTF-8 .txt files into the manual_dir folder, e.g. "
        "`tfds build char_text --imports keras_feedback.datasets "
        "--manual_dir my_texts`."
    )
    BUILDER_CONFIGS = [_config(64), _config(128), _config(256)]
    DEFAULT_CONFIG_NAME = "L128"
    code_path = _common.LocalBuilder.code_path

    def _info(self):
        length = self.builder_config.length
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    key: tfds.features.Sequence(
                        tfds.features.ClassLabel(num_classes=VOCABULARY_SIZE),
                        length=length,
                    )
                    for key in ("inputs", "targets")
                }
            ),
            supervised_keys=("inputs", "targets"),
        )

    def _split_generators(self, dl_manager):
        data = read_text(dl_manager.manual_dir)
        return {split: self._generate_examples(data, split) for split in _common.SPLITS}

    def _generate_examples(self, data, split):
        length = self.builder_config.length
        rng = _common.split_rng(split, 2, length)
        inputs, targets = windows(data, length, split, rng)
        for i in range(len(inputs)):
            yield i, {"inputs": inputs[i], "targets": targets[i]}
