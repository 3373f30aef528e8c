"""The adding problem as a TFDS dataset, generated locally.

Le, Jaitly and Hinton's variant (2015): every step has two features, a value
drawn from U[0, 1] and a marker. Exactly two steps are marked, one uniformly
in the first half of the sequence and one uniformly in the second half; the
target is the sum of the two marked values. Predicting the mean, 1, scores a
mean squared error of Var(u1 + u2) = 2/12 ≈ 0.167.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from keras_feedback._api import public
from keras_feedback.datasets import _common


def generate(num_examples, length, rng):
    """``num_examples`` sequences of the adding problem, as numpy arrays.

    Args:
        num_examples: positive int.
        length: int >= 2, the number of time steps ``T``.
        rng: a ``numpy.random.Generator``.

    Returns:
        ``(inputs, targets, positions)``: ``(N, T, 2)`` float32 (value,
        marker), ``(N,)`` float32 sums, and the ``(N, 2)`` marked steps.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"Argument `length` must be an integer >= 2, got {length!r}")
    half = length // 2
    values = rng.uniform(size=(num_examples, length)).astype(np.float32)
    first = rng.integers(0, half, num_examples)
    second = rng.integers(half, length, num_examples)
    markers = np.zeros((num_examples, length), np.float32)
    rows = np.arange(num_examples)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    inputs = np.stack([values, markers], axis=-1)
    return inputs, targets.astype(np.float32), np.stack([first, second], -1)


@dataclasses.dataclass
class AddingProblemConfig(tfds.core.BuilderConfig):
    """A config of ``adding_problem``: sequence length and split sizes."""

    length: int = 100
    num_train: int = 50_000
    num_validation: int = 5_000
    num_test: int = 10_000

    @property
    def baseline_loss(self):
        """MSE of always predicting the mean target, 1: Var(u1 + u2) = 1/6."""
        return 1.0 / 6.0


def _config(length, **sizes):
    return AddingProblemConfig(
        name=f"T{length}",
        description=f"Sequences of {length} steps.",
        length=length,
        **sizes,
    )


@public("keras_feedback.datasets.AddingProblem", serializable=False)
class AddingProblem(_common.LocalBuilder):
    """The adding problem (Le et al. 2015), generated locally.

    Registered as ``adding_problem`` when ``keras_feedback`` is imported:
    ``tfds.load("adding_problem/T100")``. Configs ``T50``, ``T100``,
    ``T200`` and ``T500`` (the sequence length); splits ``train`` (50,000),
    ``validation`` (5,000) and ``test`` (10,000); 20,000/2,000/5,000 for
    ``T500``. Nothing is downloaded: the examples are drawn with a fixed
    seed, so every build gives the same data.

    Features: ``"inputs"``, ``(T, 2)`` float32 (a value in U[0, 1] and a
    marker in {0, 1}; two steps are marked, one in the first half and one in
    the second) and ``"target"``, the float32 sum of the two marked values.
    ``as_supervised=True`` yields ``(inputs, target)``. Always predicting 1
    scores a mean squared error of 1/6 ≈ 0.167
    (``builder_config.baseline_loss``).

    Example:

    >>> import keras_feedback, tensorflow_datasets as tfds
    >>> ds = tfds.load("adding_problem/T100", split="train",
    ...                as_supervised=True)  # doctest: +SKIP

    Reference:
        Le, Jaitly and Hinton, "A Simple Way to Initialize Recurrent
        Networks of Rectified Linear Units", arXiv:1504.00941, 2015.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        _config(50),
        _config(100),
        _config(200),
        _config(500, num_train=20_000, num_validation=2_000, num_test=5_000),
    ]
    DEFAULT_CONFIG_NAME = "T100"

    def _info(self):
        length = self.builder_config.length
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "inputs": tfds.features.Tensor(shape=(length, 2), dtype=np.float32),
                    "target": tfds.features.Scalar(dtype=np.float32),
                }
            ),
            supervised_keys=("inputs", "target"),
            homepage="https://arxiv.org/abs/1504.00941",
        )

    def _config_keys(self):
        return (0, self.builder_config.length)

    def _generate_arrays(self, count, rng):
        inputs, targets, _ = generate(count, self.builder_config.length, rng)
        return {"inputs": inputs, "target": targets}
