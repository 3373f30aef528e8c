"""FeedbackCell and Feedback: parity with Keras, with numpy, with finite differences."""

import contextlib
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import LayerTestCase
from helpers import assert_covers_every_pair
from helpers import check_directional_derivatives
from helpers import weights_by_name
from numpy_reference import feedback_sequence

import keras_feedback
from keras_feedback import engine

Feedback = keras_feedback.layers.Feedback
FeedbackCell = keras_feedback.layers.FeedbackCell

KERAS_LAYERS = {
    "simple": keras.layers.SimpleRNN,
    "gru": keras.layers.GRU,
    "lstm": keras.layers.LSTM,
}
CORES = tuple(KERAS_LAYERS)


def _inputs(rng, batch=3, time=6, features=4, dtype="float32"):
    return rng.standard_normal((batch, time, features)).astype(dtype)


def _mask(batch=3, time=6):
    mask = np.ones((batch, time), bool)
    mask[0, 4:] = False
    mask[1, 1] = False
    return mask


def _randomise(layer, rng, scale=0.5):
    layer.set_weights(
        [
            scale * rng.standard_normal(w.shape).astype(w.dtype)
            for w in layer.get_weights()
        ]
    )


# --- feedback off == Keras --------------------------------------------------


# (core, go_backwards, masked): every pair of values of two of the three in
# some row (pairwise, in place of the 12 rows of the full product).
OFF_CASES = [
    ("simple", False, False),
    ("simple", True, True),
    ("gru", False, True),
    ("gru", True, False),
    ("lstm", False, True),
    ("lstm", True, False),
]


@pytest.mark.parametrize("core, go_backwards, masked", OFF_CASES)
def test_feedback_off_equals_keras(rng, core, go_backwards, masked):
    x = _inputs(rng)
    mask = _mask() if masked else None
    kwargs = dict(return_sequences=True, return_state=True, go_backwards=go_backwards)
    ours = Feedback(4, feedback_units=0, core=core, **kwargs)
    theirs = KERAS_LAYERS[core](4, **kwargs)
    ours(x)
    theirs(x)
    assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]
    _randomise(theirs, rng)
    ours.set_weights(theirs.get_weights())
    xt = tf.constant(x)
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            out = layer(xt, mask=mask)
            loss = tf.reduce_sum(out[0] ** 2) + tf.reduce_sum(tf.sin(out[-1]))
        grads = tape.gradient(loss, [xt] + layer.trainable_weights)
        results.append((out, grads))
    (out_a, grad_a), (out_b, grad_b) = results
    assert len(out_a) == len(out_b)
    for a, b in zip(out_a, out_b):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for a, b in zip(grad_a, grad_b):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("core", CORES)
def test_cell_in_keras_rnn_equals_keras_layer(rng, core):
    x = _inputs(rng)
    ours = keras.layers.RNN(FeedbackCell(5, feedback_units=0, core=core))
    theirs = KERAS_LAYERS[core](5)
    ours(x)
    theirs(x)
    _randomise(theirs, rng)
    ours.set_weights(theirs.get_weights())
    np.testing.assert_allclose(ours(x), theirs(x), atol=1e-5)


# --- feedback on == numpy ----------------------------------------------------

COMBOS = list(itertools.product(CORES, [False, True], [False, True], [None, 3]))
# (core, attention, residual, output_units): every pair of values of any two
# of the four in some row (a pairwise covering set of COMBOS); each core runs
# every option both ways.
PAIRWISE = [
    ("simple", False, False, None),
    ("simple", True, True, 3),
    ("gru", False, True, 3),
    ("gru", True, False, None),
    ("lstm", True, False, 3),
    ("lstm", False, True, None),
]


def test_the_short_cases_cover_every_pair_of_options():
    for cases, options in (
        (OFF_CASES, [CORES, (False, True), (False, True)]),
        (PAIRWISE, [CORES, (False, True), (False, True), (None, 3)]),
    ):
        assert_covers_every_pair(cases, options)
    assert set(PAIRWISE) <= set(COMBOS)


def _combo_id(combo):
    core, attention, residual, output_units = combo
    return f"{core}-att{int(attention)}-res{int(residual)}-out{output_units or 0}"


@pytest.mark.parametrize("combo", PAIRWISE, ids=[_combo_id(c) for c in PAIRWISE])
def test_feedback_on_equals_numpy(rng, combo):
    core, attention, residual, output_units = combo
    cfg = dict(
        core=core,
        units=4,
        feedback_units=3,
        attention=attention,
        residual=residual,
        output_units=output_units,
        output_activation="tanh" if output_units else None,
    )
    layer = Feedback(return_sequences=True, return_state=True, return_trace=True, **cfg)
    x = _inputs(rng, features=2)
    mask = _mask()
    layer(x)
    _randomise(layer, rng)
    result = layer(x, mask=mask)
    outputs, states, trace = result[0], result[1:-1], result[-1]
    ref_out, ref_states, ref_trace = feedback_sequence(
        weights_by_name(layer), x.astype("float64"), cfg, mask=mask
    )
    np.testing.assert_allclose(outputs, ref_out, atol=1e-5)
    assert len(states) == len(ref_states)
    for a, b in zip(states, ref_states):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert sorted(trace) == sorted(ref_trace)
    for key in trace:
        np.testing.assert_allclose(trace[key], ref_trace[key], atol=1e-5)


@pytest.mark.parametrize("core", CORES)
def test_layer_norm_go_backwards_initial_state_equal_numpy(rng, core):
    cfg = dict(
        core=core,
        units=4,
        feedback_units=2,
        layer_norm=True,
        activation="relu",
        feedback_activation="tanh",
    )
    layer = Feedback(return_sequences=True, go_backwards=True, **cfg)
    x = _inputs(rng, features=3)
    layer(x)
    _randomise(layer, rng)
    initial = [rng.standard_normal((3, s)).astype("float32") for s in layer.state_size]
    ref, _, _ = feedback_sequence(
        weights_by_name(layer),
        x.astype("float64"),
        cfg,
        initial=[i.astype("float64") for i in initial],
        go_backwards=True,
    )
    np.testing.assert_allclose(layer(x, initial_state=initial), ref, atol=1e-5)


@pytest.mark.parametrize("combo", COMBOS[::3], ids=[_combo_id(c) for c in COMBOS[::3]])
def test_gradients_match_finite_differences(rng, combo):
    """Directional derivatives of a float64 loss, in random directions."""
    core, attention, residual, output_units = combo
    layer = Feedback(
        3,
        feedback_units=2,
        core=core,
        attention=attention,
        residual=residual,
        output_units=output_units,
        return_sequences=True,
        dtype="float64",
    )
    x = tf.constant(_inputs(rng, batch=2, time=4, features=2, dtype="float64"))
    layer(x)
    _randomise(layer, rng)
    check_directional_derivatives(
        lambda: tf.reduce_sum(tf.sin(layer(x))), layer.trainable_weights, rng
    )


# --- Keras behaviour ------------------------------------------------------


def test_unroll_equals_loop(rng):
    x = _inputs(rng)
    looped = Feedback(4, core="lstm", return_sequences=True)
    unrolled = Feedback(4, core="lstm", return_sequences=True, unroll=True)
    looped(x)
    unrolled(x)
    unrolled.set_weights(looped.get_weights())
    np.testing.assert_allclose(
        looped(x, mask=_mask()), unrolled(x, mask=_mask()), atol=1e-6
    )


def test_stacked_cells_equal_stacked_layers(rng):
    x = _inputs(rng)
    cells = [
        FeedbackCell(4, feedback_units=2, core="gru"),
        FeedbackCell(3, core="simple"),
    ]
    stacked = keras.layers.RNN(
        keras.layers.StackedRNNCells(cells), return_sequences=True
    )
    first = Feedback(4, feedback_units=2, core="gru", return_sequences=True)
    second = Feedback(3, core="simple", return_sequences=True)
    stacked(x)
    second(first(x))
    first.set_weights([w.numpy() for w in cells[0].weights])
    second.set_weights([w.numpy() for w in cells[1].weights])
    np.testing.assert_allclose(stacked(x), second(first(x)), atol=1e-5)


def test_stateful_continues_across_batches(rng):
    x = _inputs(rng, time=8)
    full = Feedback(4, core="gru", return_sequences=True)
    stateful = Feedback(4, core="gru", return_sequences=True, stateful=True)
    inp = keras.Input(batch_shape=(3, None, 4))
    model = keras.Model(inp, stateful(inp))
    full(x)
    stateful.set_weights(full.get_weights())
    expected = full(x)
    halves = np.concatenate([model(x[:, :5]), model(x[:, 5:])], axis=1)
    np.testing.assert_allclose(halves, expected, atol=1e-5)
    stateful.reset_state()
    np.testing.assert_allclose(model(x[:, :5]), expected[:, :5], atol=1e-5)
    states = [
        rng.standard_normal((3, s)).astype("float32") for s in stateful.state_size
    ]
    stateful.reset_state(states)
    np.testing.assert_allclose(model(x), full(x, initial_state=states), atol=1e-5)


def test_dropout_active_only_in_training(rng):
    x = _inputs(rng)
    layer = Feedback(
        4, dropout=0.5, recurrent_dropout=0.5, seed=3, return_sequences=True
    )
    plain = Feedback(4, return_sequences=True)
    layer(x)
    plain(x)
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer(x, training=False), plain(x), atol=1e-6)
    assert np.abs(layer(x, training=True) - plain(x)).max() > 1e-3


def test_sequential_bidirectional_and_keras_file_round_trip(rng, tmp_path):
    # On the reference loop (engine.scope), which gives the fused engine's
    # results (test_engine_agreement.py): the model, its file and the loaded
    # model are the subject, not the engine; XLA's compilations cost 30 s.
    with engine.scope("reference"):
        _sequential_bidirectional_and_keras_file_round_trip(rng, tmp_path)


def _sequential_bidirectional_and_keras_file_round_trip(rng, tmp_path):
    x = _inputs(rng)
    y = rng.standard_normal((3, 2)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((None, 4)),
            keras.layers.Masking(0.0),
            Feedback(5, core="lstm", attention=True, return_sequences=True),
            keras.layers.Bidirectional(Feedback(3, core="gru", output_units=2)),
            keras.layers.Dense(2),
        ]
    )
    model.compile("adam", "mse")
    history = model.fit(x, y, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    assert loaded.layers[1].get_config() == model.layers[1].get_config()


def test_bidirectional_equals_two_directions(rng):
    x = _inputs(rng)
    bi = keras.layers.Bidirectional(Feedback(3, core="simple", return_sequences=True))
    bi(x)
    forward = Feedback(3, core="simple", return_sequences=True)
    backward = Feedback(3, core="simple", return_sequences=True, go_backwards=True)
    forward(x)
    backward(x)
    n = len(forward.weights)
    forward.set_weights(bi.get_weights()[:n])
    backward.set_weights(bi.get_weights()[n:])
    expected = np.concatenate([forward(x), np.flip(backward(x), 1)], -1)
    np.testing.assert_allclose(bi(x), expected, atol=1e-6)


def test_functional_and_subclassed_models(rng):
    x = _inputs(rng)

    class Model(keras.Model):
        def __init__(self):
            super().__init__()
            self.rnn = Feedback(4, core="simple", return_state=True)
            self.head = keras.layers.Dense(1)

        def call(self, inputs):
            output, h, c = self.rnn(inputs)
            return self.head(output + h)

    sub = Model()
    sub(x)
    inp = keras.Input((None, 4))
    output, h, c = Feedback(4, core="simple", return_state=True)(inp)
    functional = keras.Model(inp, keras.layers.Dense(1)(output + h))
    functional.set_weights(sub.get_weights())
    np.testing.assert_allclose(functional(x), sub(x), atol=1e-6)


def test_config_round_trip():
    layer = Feedback(
        4,
        feedback_units=2,
        core="lstm",
        attention=True,
        residual=True,
        output_units=3,
        output_activation="relu",
        layer_norm=True,
        kernel_regularizer="l2",
        dropout=0.1,
        seed=7,
        return_trace=True,
    )
    config = layer.get_config()
    clone = Feedback.from_config(config)
    assert clone.get_config() == config
    cell = FeedbackCell(4, core="simple", feedback_activation="tanh")
    assert FeedbackCell.from_config(cell.get_config()).get_config() == cell.get_config()


def test_feedback_and_feedforward_weights_partition():
    layer = Feedback(4, feedback_units=2, attention=True, output_units=2)
    layer.build((None, None, 3))
    feedback = {w.name for w in layer.feedback_weights}
    feedforward = {w.name for w in layer.feedforward_weights}
    assert feedback == {
        "feedback_recurrent_kernel",
        "feedback_kernel",
        "feedback_bias",
        "attention_kernel",
        "attention_bias",
    }
    assert feedback.isdisjoint(feedforward)
    assert feedback | feedforward == {w.name for w in layer.weights}


# --- Keras's own layer conformance check ---------------------------------


LAYER_CASES = [
    ("gru_feedback", dict(units=3, core="gru")),
    (
        "lstm_attention_output",
        dict(units=3, core="lstm", attention=True, output_units=2),
    ),
    (
        "simple_residual_norm",
        dict(units=3, core="simple", residual=True, layer_norm=True),
    ),
    ("no_feedback_sequences", dict(units=3, feedback_units=0, return_sequences=True)),
    ("dropout", dict(units=3, dropout=0.2, recurrent_dropout=0.2, seed=1)),
]


# The case that runs Keras's check on the engine "auto" picks (the fused
# engine, as the conftest sets the size rule); the others run it on the
# reference loop (``engine.scope``), which gives the fused engine's results
# (test_engine_agreement.py) without XLA's compile time (36 s against 10 s
# for the five). The check is of the layer's Keras API, the same on both.
FUSED_CASE = "lstm_attention_output"


class TestKerasConformance(LayerTestCase):
    def test_feedback_layer(self):
        for name, kwargs in LAYER_CASES:
            fused = name == FUSED_CASE
            scope = contextlib.nullcontext() if fused else engine.scope("reference")
            with self.subTest(name), scope:
                size = kwargs.get("output_units") or kwargs["units"]
                shape = (2, 5, size) if kwargs.get("return_sequences") else (2, size)
                self.check_recurrent_layer(Feedback, kwargs, (2, 5, 4), shape)

    def test_cell_in_keras_rnn(self):
        for name, kwargs in LAYER_CASES[:3]:
            with self.subTest(name):
                kwargs = dict(kwargs)
                size = kwargs.get("output_units") or kwargs["units"]
                self.run_layer_test(
                    keras.layers.RNN,
                    init_kwargs={"cell": FeedbackCell(**kwargs)},
                    input_shape=(2, 5, 4),
                    expected_output_shape=(2, size),
                    supports_masking=True,
                )


# --- bad input -----------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(units=0), "`units` must be a positive integer, got 0"),
        (dict(units=-3), "got -3"),
        (dict(units=2.5), "got 2.5"),
        (dict(units=4, feedback_units=-1), "`feedback_units`.*got -1"),
        (dict(units=4, output_units=0), "`output_units`.*got 0"),
        (dict(units=4, core="rnn"), "`core` must be one of .*got 'rnn'"),
        (dict(units=4, dropout=1.5), "`dropout`.*got 1.5"),
        (dict(units=4, engine="fast"), "`engine` must be one of .*got 'fast'"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Feedback(**kwargs)


def test_unknown_activation_lists_close_names():
    with pytest.raises(ValueError, match="'tanhh'.*'tanh'"):
        Feedback(4, activation="tanhh")


def test_wrong_rank_and_changing_feature_size(rng):
    layer = Feedback(4)
    with pytest.raises(ValueError, match="ndim=3, found ndim=2"):
        layer(np.zeros((2, 5), "float32"))
    layer(_inputs(rng, features=4))
    with pytest.raises(
        ValueError, match="expected axis -1 of input shape to have value 4"
    ):
        layer(_inputs(rng, features=5))


def test_bad_initial_state(rng):
    layer = Feedback(4, feedback_units=2, core="lstm")
    x = _inputs(rng)
    with pytest.raises(
        ValueError, match="must hold 3 tensors of sizes \\[4, 4, 2\\].*got 2"
    ):
        layer(x, initial_state=[np.zeros((3, 4), "float32")] * 2)
    bad = [
        np.zeros((3, 4), "float32"),
        np.zeros((3, 4), "float32"),
        np.zeros((3, 5), "float32"),
    ]
    with pytest.raises(
        ValueError,
        match="`initial_state`\\[2\\] \\(c\\) must have shape \\(3, 2\\), got \\(3, 5\\)",
    ):
        layer(x, initial_state=bad)


def test_stateful_needs_fixed_batch():
    layer = Feedback(4, stateful=True)
    with pytest.raises(ValueError, match="fixed batch size"):
        keras.Model(inp := keras.Input((None, 3)), layer(inp))


def test_reset_state_checks_shapes(rng):
    layer = Feedback(4, core="gru", stateful=True)
    layer(_inputs(rng))
    with pytest.raises(
        ValueError,
        match="`states`\\[0\\] \\(h\\) has batch size 2, the layer.s stored states have batch size 3",
    ):
        layer.reset_state([np.zeros((2, 4), "float32"), np.zeros((2, 4), "float32")])
