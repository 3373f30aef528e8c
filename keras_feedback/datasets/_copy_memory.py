"""The copy-memory task as a TFDS dataset, generated locally.

Arjovsky, Shah and Bengio's variant (2016), with delay ``T``: the input is 10
symbols drawn uniformly from {1, ..., 8}, then ``T - 1`` blanks (0), then a
delimiter (9), then 10 blanks: ``T + 20`` steps. The target is ``T + 10``
blanks followed by the 10 symbols. A model without memory outputs blanks and
then guesses uniformly among 8 symbols: its cross-entropy per step is
``10 ln 8 / (T + 20)``.
"""

import dataclasses
import math

import numpy as np
import tensorflow_datasets as tfds

from keras_feedback._api import public
from keras_feedback.datasets import _common

NUM_SYMBOLS = 8
NUM_COPIED = 10
BLANK = 0
DELIMITER = NUM_SYMBOLS + 1
# Input tokens: blank, the symbols, the delimiter. Target classes: blank and
# the symbols.
INPUT_VOCABULARY = NUM_SYMBOLS + 2
NUM_CLASSES = NUM_SYMBOLS + 1


def generate(num_examples, delay, rng):
    """``num_examples`` copy-memory sequences, as numpy arrays.

    Args:
        num_examples: positive int.
        delay: positive int ``T``, the steps between the last symbol shown
            and the delimiter, plus one.
        rng: a ``numpy.random.Generator``.

    Returns:
        ``(inputs, targets)``, both ``(N, T + 20)`` int32.
    """
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 1:
        raise ValueError(f"Argument `delay` must be a positive integer, got {delay!r}")
    length = delay + 2 * NUM_COPIED
    symbols = rng.integers(1, NUM_SYMBOLS + 1, (num_examples, NUM_COPIED))
    inputs = np.full((num_examples, length), BLANK, np.int32)
    inputs[:, :NUM_COPIED] = symbols
    inputs[:, NUM_COPIED + delay - 1] = DELIMITER
    targets = np.full((num_examples, length), BLANK, np.int32)
    targets[:, -NUM_COPIED:] = symbols
    return inputs, targets


def memoryless_loss(delay):
    """Cross-entropy per step of the best model without memory."""
    return NUM_COPIED * math.log(NUM_SYMBOLS) / (delay + 2 * NUM_COPIED)


@dataclasses.dataclass
class CopyMemoryConfig(tfds.core.BuilderConfig):
    """A config of ``copy_memory``: the delay and the split sizes."""

    delay: int = 50
    num_train: int = 20_000
    num_validation: int = 2_000
    num_test: int = 5_000

    @property
    def baseline_loss(self):
        """Cross-entropy per step of the memoryless model."""
        return memoryless_loss(self.delay)


def _config(delay):
    return CopyMemoryConfig(
        name=f"delay{delay}",
        description=f"Recall 10 symbols after {delay} steps.",
        delay=delay,
    )


@public("keras_feedback.datasets.CopyMemory", serializable=False)
class CopyMemory(_common.LocalBuilder):
    """The copy-memory task (Arjovsky et al. 2016), generated locally.

    Registered as ``copy_memory`` when ``keras_feedback`` is imported:
    ``tfds.load("copy_memory/delay50")``. Configs ``delay10``, ``delay50``,
    ``delay100`` and ``delay200`` (the delay ``T``); splits ``train``
    (20,000), ``validation`` (2,000) and ``test`` (5,000), drawn with a fixed
    seed; nothing is downloaded.

    Features: ``"inputs"``, ``T + 20`` class labels in [0, 10): 10 symbols
    in 1..8, ``T - 1`` blanks (0), the delimiter 9 and 10 blanks;
    ``"targets"``, ``T + 20`` class labels in [0, 9): ``T + 10`` blanks,
    then the 10 symbols (both ``Sequence(ClassLabel)``, int64 when loaded).
    ``as_supervised=True`` yields ``(inputs, targets)``.
    A model without memory scores a cross-entropy per step of
    ``10 ln 8 / (T + 20)`` (``builder_config.baseline_loss``; 0.297 for
    ``delay50``).

    Example:

    >>> import keras_feedback, tensorflow_datasets as tfds
    >>> ds = tfds.load("copy_memory/delay50", split="train",
    ...                as_supervised=True)  # doctest: +SKIP

    Reference:
        Arjovsky, Shah and Bengio, "Unitary Evolution Recurrent Neural
        Networks", ICML 2016.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [_config(10), _config(50), _config(100), _config(200)]
    DEFAULT_CONFIG_NAME = "delay50"

    def _info(self):
        length = self.builder_config.delay + 2 * NUM_COPIED
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "inputs": tfds.features.Sequence(
                        tfds.features.ClassLabel(num_classes=INPUT_VOCABULARY),
                        length=length,
                    ),
                    "targets": tfds.features.Sequence(
                        tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                        length=length,
                    ),
                }
            ),
            supervised_keys=("inputs", "targets"),
            homepage="https://arxiv.org/abs/1511.06464",
        )

    def _config_keys(self):
        return (1, self.builder_config.delay)

    def _generate_arrays(self, count, rng):
        inputs, targets = generate(count, self.builder_config.delay, rng)
        return {"inputs": inputs, "targets": targets}
