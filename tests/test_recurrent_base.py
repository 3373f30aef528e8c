"""The recurrent base's contracts: ``step``, states, masks, dtypes, edge shapes.

Every check runs on both layers built on ``FeedbackRNN`` (``Feedback`` and
``ConvFeedback2D``); the oracle is the layer's own whole-sequence call (and,
for the edge shapes, the other engine).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_covers_every_pair
from helpers import randomise
from helpers import relative_error
from helpers import stream_steps

import keras_feedback
from keras_feedback import engine as engines

Feedback = keras_feedback.layers.Feedback
ConvFeedback2D = keras_feedback.layers.ConvFeedback2D

# (layer, core, attention, residual, output projection): every pair of
# values of any two of the five options is in some row (a pairwise covering
# set, checked by test_the_step_cases_cover_every_pair_of_options, in place
# of the 48 rows of the full product); each core runs every option both ways.
STEP_CASES = [
    ("dense", "simple", False, False, None),
    ("conv", "simple", True, True, 3),
    ("dense", "gru", False, True, 3),
    ("conv", "gru", True, False, None),
    ("dense", "lstm", True, False, 3),
    ("conv", "lstm", False, True, None),
]
ENGINES = ("reference", "xla")


def _layer(kind, core="gru", attention=False, residual=False, output=None, **kwargs):
    if kind == "dense":
        return Feedback(
            4,
            feedback_units=2,
            core=core,
            attention=attention,
            residual=residual,
            output_units=output,
            **kwargs,
        )
    return ConvFeedback2D(
        2,
        3,
        padding="same",
        feedback_filters=1,
        core=core,
        attention=attention,
        residual=residual,
        output_filters=output,
        **kwargs,
    )


def _inputs(kind, rng, batch=3, time=5):
    shape = (batch, time, 3) if kind == "dense" else (batch, time, 4, 4, 1)
    return rng.standard_normal(shape).astype("float32")


def _gappy_mask(batch=3, time=5):
    mask = np.ones((batch, time), bool)
    mask[0, 2] = False  # a gap
    mask[1, 3:] = False  # padding at the end
    mask[2, 0] = False  # a leading masked step
    mask[2, 2] = False
    return mask


def test_the_step_cases_cover_every_pair_of_options():
    options = [("dense", "conv"), ("simple", "gru", "lstm"), *[(False, True)] * 2]
    options.append((None, 3))
    assert_covers_every_pair(STEP_CASES, options)


@pytest.mark.parametrize("kind, core, attention, residual, output", STEP_CASES)
def test_step_equals_sequence_call(rng, kind, core, attention, residual, output):
    layer = _layer(
        kind,
        core,
        attention,
        residual,
        output,
        return_sequences=True,
        return_state=True,
    )
    x = _inputs(kind, rng)
    mask = _gappy_mask()
    layer(x)
    randomise(layer, rng)
    expected, *expected_states = layer(x, mask=mask)
    outputs, states = stream_steps(layer, x, mask)
    assert relative_error(outputs, expected) < 1e-5
    for state, reference in zip(states, expected_states):
        assert relative_error(state, reference) < 1e-5


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_step_backwards_and_default_held_output(rng, kind):
    """Fed last step first, ``step`` gives the ``go_backwards`` call; without
    ``previous_output`` a masked row repeats the output its states give."""
    layer = _layer(
        kind, "lstm", True, False, 3, return_sequences=True, go_backwards=True
    )
    x = _inputs(kind, rng)
    mask = np.ones((3, 5), bool)
    mask[0, 1] = mask[2, 2:4] = False  # gaps after a first valid step
    layer(x)
    randomise(layer, rng)
    expected = layer(x, mask=mask)
    states = layer.get_initial_state(3)
    outputs = []
    for t in range(4, -1, -1):
        y, states = layer.step(x[:, t], states, mask=mask[:, t])
        outputs.append(y)
    assert relative_error(np.stack(outputs, 1), expected) < 1e-5


def test_step_takes_states_by_name_and_refuses_other_keys(rng):
    layer = Feedback(4, feedback_units=2, core="lstm")
    x = _inputs("dense", rng)
    layer(x)
    h, carry, c = (rng.standard_normal((3, n)).astype("float32") for n in (4, 4, 2))
    as_list = layer.step(x[:, 0], [h, carry, c])
    as_dict = layer.step(x[:, 0], {"c": c, "h": h, "carry": carry})
    np.testing.assert_allclose(as_dict[0], as_list[0], atol=0)
    with pytest.raises(
        ValueError, match=r"keys \['h', 'carry', 'c'\].*got \['a', 'c', 'h'\]"
    ):
        layer.step(x[:, 0], {"h": h, "a": carry, "c": c})
    sequence = layer(x, initial_state={"carry": carry, "h": h, "c": c})
    np.testing.assert_allclose(sequence, layer(x, initial_state=[h, carry, c]), atol=0)
    with pytest.raises(
        ValueError, match=r"`states`\[2\] \(c\) must have shape \(3, 2\)"
    ):
        layer.step(x[:, 0], [h, carry, h])
    with pytest.raises(ValueError, match=r"`inputs` of Feedback.step must have rank 2"):
        layer.step(x, [h, carry, c])


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.ones((3, 4), bool), r"\(batch, time\) = \(3, 5\).*got \(3, 4\)"),
        (np.ones((3, 6), bool), r"got \(3, 6\)"),
        (np.ones((2, 5), bool), r"got \(2, 5\)"),
        (np.ones((3, 5, 1), bool), r"got \(3, 5, 1\)"),
        (np.ones((3,), bool), r"got \(3,\)"),
    ],
)
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_mask_that_does_not_fit_is_an_error(rng, kind, mask, message):
    layer = _layer(kind)
    with pytest.raises(
        ValueError, match="Argument `mask` must have shape .*" + message
    ):
        layer(_inputs(kind, rng), mask=mask)


def test_mask_that_does_not_fit_in_a_graph_is_an_error(rng):
    layer = Feedback(4)
    x = _inputs("dense", rng)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, 3], tf.float32),
            tf.TensorSpec([None, None], tf.bool),
        ]
    )
    def call(x, mask):
        return layer(x, mask=mask)

    with pytest.raises(tf.errors.InvalidArgumentError, match="`mask` must have shape"):
        call(x, np.ones((3, 4), bool))


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_stateful_layer_names_its_batch_size(rng, kind):
    layer = _layer(kind, stateful=True)
    layer(_inputs(kind, rng, batch=4))
    with pytest.raises(
        ValueError,
        match=r"built for batch size 4 and got inputs with batch size 2.*batch_shape=\(2, \.\.\.\)",
    ):
        layer(_inputs(kind, rng, batch=2))


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_int_inputs_are_cast(rng, kind):
    layer = _layer(kind)
    x = np.round(3 * _inputs(kind, rng))
    expected = layer(x.astype("float32"))
    np.testing.assert_allclose(layer(x.astype("int32")), expected, atol=0)
    np.testing.assert_allclose(layer(x.astype("int64")), expected, atol=0)


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("static", [True, False])
def test_no_time_steps_gives_initial_states_on_both_engines(rng, kind, static):
    x = _inputs(kind, rng, time=0)
    results = {}
    for name in ENGINES:
        layer = _layer(
            kind, "lstm", return_sequences=True, return_state=True, engine=name
        )
        call = layer
        if not static:
            spec = tf.TensorSpec((None, None, *x.shape[2:]), tf.float32)
            call = tf.function(layer.__call__, input_signature=[spec])
        results[name] = [np.asarray(t) for t in call(x)]
    outputs, *states = results["reference"]
    assert outputs.shape[:2] == (3, 0)
    for state in states:
        assert state.shape[0] == 3 and not np.any(state)
    for a, b in zip(results["xla"], results["reference"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_empty_batch_on_both_engines(rng, kind):
    x = _inputs(kind, rng, batch=0)
    for name in ENGINES:
        layer = _layer(kind, return_sequences=True, engine=name)
        y = layer(x, mask=np.ones((0, 5), bool))
        assert y.shape[0] == 0 and y.shape[1] == 5
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        grads = tape.gradient(loss, layer.trainable_weights)
        assert all(g is not None and not np.any(g) for g in grads)


def test_empty_batch_and_no_steps_in_exported_saved_model(rng, tmp_path):
    model = keras.Sequential(
        [keras.Input((None, 3)), Feedback(4, core="gru", return_sequences=True)]
    )
    path = keras_feedback.export.export_saved_model(model, tmp_path / "sm")
    served = tf.saved_model.load(path).signatures["serving_default"]
    assert served(x=tf.zeros((0, 5, 3)))["y"].shape == (0, 5, 4)
    assert served(x=tf.zeros((2, 0, 3)))["y"].shape == (2, 0, 4)


def test_engine_scope_does_not_mutate_layers():
    layer = Feedback(4, engine="xla")
    with engines.scope("reference"):
        assert engines.resolve(layer.engine) == "reference"
        with engines.scope("xla"):
            assert engines.resolve("reference") == "xla"
        assert engines.resolve(layer.engine) == "reference"
    assert layer.engine == "xla" and engines.resolve(layer.engine) == "xla"
    with pytest.raises(ValueError, match="`engine` must be one of .*got 'fast'"):
        with engines.scope("fast"):
            pass


@pytest.mark.parametrize("layer_norm", [False, True])
def test_float64_engines_agree_with_layer_norm(rng, layer_norm):
    x = tf.constant(rng.standard_normal((2, 6, 3)))
    layers = {
        name: Feedback(
            5,
            feedback_units=2,
            core="lstm",
            layer_norm=layer_norm,
            residual=True,
            return_sequences=True,
            dtype="float64",
            engine=name,
        )
        for name in ENGINES
    }
    for layer in layers.values():
        layer(x)
    randomise(layers["reference"], rng)
    layers["xla"].set_weights(layers["reference"].get_weights())
    results = {}
    for name, layer in layers.items():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.sin(y))
        results[name] = [y, *tape.gradient(loss, [x, *layer.trainable_weights])]
    for a, b in zip(results["xla"], results["reference"]):
        assert relative_error(a, b) < 1e-12
