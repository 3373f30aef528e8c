"""Helpers shared by the tests, and the one test base class.

Keras's private ``run_layer_test`` is imported here and nowhere else:
``LayerTestCase`` is the base of every test class that runs it.
"""

import itertools

import numpy as np
import tensorflow as tf
from keras.src import testing


class LayerTestCase(testing.TestCase):
    """The reusable checks of the library's layers.

    ``run_layer_test`` is Keras's conformance check (serialization, build,
    weight counts, symbolic and eager calls, masking, a ``fit`` step, mixed
    precision); ``check_recurrent_layer`` adds what every layer built on
    ``FeedbackRNN`` promises on top of it.
    """

    def check_recurrent_layer(self, cls, init_kwargs, input_shape, expected_shape):
        """Keras conformance with masking, a config round trip, and ``step``
        over the time axis equal to the whole-sequence call (masked)."""
        self.run_layer_test(
            cls,
            init_kwargs=init_kwargs,
            input_shape=input_shape,
            expected_output_shape=expected_shape,
            supports_masking=True,
        )
        layer = cls(**init_kwargs)
        clone = cls.from_config(layer.get_config())
        self.assertEqual(clone.get_config(), layer.get_config())
        rng = np.random.default_rng(0)
        x = rng.standard_normal(input_shape).astype("float32")
        mask = np.ones(input_shape[:2], bool)
        mask[0, -1] = False
        expected = layer(x, mask=mask, training=False)
        outputs, _ = stream_steps(layer, x, mask)
        if not layer.return_sequences:
            outputs = outputs[:, -1]
        self.assertLess(relative_error(outputs, expected), 1e-5)


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


def check_directional_derivatives(loss, variables, rng, directions=3):
    """The tape's gradient of ``loss()`` against central finite differences
    (eps 1e-6, float64 variables) along random directions; the variables
    are restored after."""
    with tf.GradientTape() as tape:
        value = loss()
    grads = tape.gradient(value, variables)
    base = [v.numpy() for v in variables]
    eps = 1e-6
    try:
        for _ in range(directions):
            direction = [rng.standard_normal(b.shape) for b in base]
            analytic = sum(np.sum(g.numpy() * d) for g, d in zip(grads, direction))
            values = []
            for sign in (1, -1):
                for v, b, d in zip(variables, base, direction):
                    v.assign(b + sign * eps * d)
                values.append(float(loss()))
            numeric = (values[0] - values[1]) / (2 * eps)
            np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    finally:
        for v, b in zip(variables, base):
            v.assign(b)


def load_example(name):
    """The module of ``examples/<name>.py``."""
    import importlib.util
    import os

    folder = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", os.path.join(folder, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative_error(actual, expected):
    """Max abs error over the magnitude of ``expected`` (at least 1)."""
    actual = np.asarray(actual, "float64")
    expected = np.asarray(expected, "float64")
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


def stream_steps(layer, x, mask=None):
    """``layer.step`` over every time step of ``x`` from zero states, as the
    sequence call processes them: ``(outputs (batch, time, ...), states)``."""
    batch, time = x.shape[:2]
    order = range(time - 1, -1, -1) if layer.go_backwards else range(time)
    states = layer.get_initial_state(batch)
    output = tf.zeros([batch, *layer.step_output_shape], layer.compute_dtype)
    outputs = []
    for t in order:
        step_mask = None if mask is None else mask[:, t]
        output, states = layer.step(
            x[:, t], states, mask=step_mask, previous_output=output
        )
        outputs.append(output)
    return np.stack(outputs, 1), states


# --- Keras's own recurrent-layer tests, run against Feedback -----------------

KERAS_RNN_TEST_FILES = (
    "simple_rnn_test.py",
    "gru_test.py",
    "lstm_test.py",
    "bidirectional_test.py",
)


def _feedback_as(keras_name, core):
    """A ``Feedback`` subclass that stands for Keras's ``keras_name``: the
    same constructor (``feedback_units=0``, the core fixed), the same
    config keys, registered for serialization."""
    import keras

    from keras_feedback.layers import Feedback

    class Adapted(Feedback):
        def __init__(self, units, **kwargs):
            super().__init__(units, feedback_units=0, core=core, **kwargs)

        def get_config(self):
            config = super().get_config()
            del config["core"], config["feedback_units"]
            return config

    Adapted.__name__ = Adapted.__qualname__ = f"Feedback{keras_name}"
    return keras.saving.register_keras_serializable(package="keras_adapter")(Adapted)


class _Layers:
    """Keras's ``keras.src.layers`` with ``SimpleRNN``, ``GRU`` and ``LSTM``
    replaced by ``Feedback`` at ``feedback_units=0``."""

    def __init__(self):
        from keras.src import layers

        self._layers = layers
        self.SimpleRNN = _feedback_as("SimpleRNN", "simple")
        self.GRU = _feedback_as("GRU", "gru")
        self.LSTM = _feedback_as("LSTM", "lstm")

    def __getattr__(self, name):
        return getattr(self._layers, name)


def keras_rnn_test_module(filename):
    """Keras's own test file ``keras/src/layers/rnn/<filename>``, read from
    the installed Keras (so its version always matches) and run unmodified
    but for the layer classes: its module global ``layers`` is replaced by
    ``_Layers``, which the test methods read when they run."""
    import importlib.util
    import os

    import keras.src.layers.rnn as rnn

    path = os.path.join(os.path.dirname(rnn.__file__), filename)
    name = "keras_suite_" + filename[: -len(".py")]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.layers = _Layers()
    return module


def assert_covers_every_pair(cases, options):
    """Every pair of values of two of ``options`` (a list of each
    position's values) is in some row of ``cases``: the rows are a pairwise
    covering set of the full product."""
    for i, j in itertools.combinations(range(len(options)), 2):
        for a, b in itertools.product(options[i], options[j]):
            assert any(row[i] == a and row[j] == b for row in cases), (i, j, a, b)
