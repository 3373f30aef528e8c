"""Helpers shared by the tests, and the one test base class.

Keras's private ``run_layer_test`` is imported here and nowhere else:
``LayerTestCase`` is the base of every test class that runs it.
"""

import numpy as np
from keras.src import testing


class LayerTestCase(testing.TestCase):
    """Keras's layer conformance checks (``run_layer_test``: serialization,
    build, weight counts, symbolic and eager calls, masking, a ``fit`` step,
    mixed precision) for the library's layers."""


def weights_by_name(layer):
    """``{name: float64 array}`` of ``layer``'s trainable weights."""
    return {v.name: np.asarray(v.numpy(), "float64") for v in layer.trainable_weights}


def randomise(layer, rng, scale=0.5):
    """Sets every weight of ``layer`` to ``scale`` times a standard normal."""
    layer.set_weights(
        [
            scale * rng.standard_normal(w.shape).astype(w.dtype)
            for w in layer.get_weights()
        ]
    )


def relative_error(actual, expected):
    """Max abs error over the magnitude of ``expected`` (at least 1)."""
    actual = np.asarray(actual, "float64")
    expected = np.asarray(expected, "float64")
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale
