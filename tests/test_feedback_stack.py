"""FeedbackStack: stacked layers with top-down (gated) feedback.

Oracles: Keras's stacked SimpleRNN/GRU/LSTM (``top_down=None``, no
feedback), the numpy reference of the gated-feedback RNN's equations
(``numpy_reference.stack_sequence``, written as sums over source layers),
the other engine, and central finite differences.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_covers_every_pair
from helpers import check_directional_derivatives
from helpers import relative_error
from helpers import stream_steps
from numpy_reference import stack_sequence

from keras_feedback import cores
from keras_feedback import export
from keras_feedback.layers import FeedbackStack

KERAS = {
    "simple": keras.layers.SimpleRNN,
    "gru": keras.layers.GRU,
    "lstm": keras.layers.LSTM,
}


def _randomise(stack, rng, scale=0.5):
    """Random weights; IndRNN's elementwise ``u`` in [0.3, 1)."""
    for v in stack.weights:
        if v.path.endswith("recurrent_kernel") and len(v.shape) == 1:
            value = rng.uniform(0.3, 1.0, v.shape)
        else:
            value = scale * rng.standard_normal(v.shape)
        v.assign(np.asarray(value, v.dtype))


def _reference_weights(stack):
    """The numpy reference's per-layer and across-layer weights."""
    layers = [
        {v.name: np.asarray(v.numpy(), "float64") for v in cell.trainable_weights}
        for cell in stack.layers
    ]
    across = [
        {k: np.asarray(v.numpy(), "float64") for k, v in weights.items()}
        for weights in stack.cell._stack_weights
    ]
    return layers, across


def _configs(stack):
    """The numpy reference's per-layer options."""
    configs = []
    for cell in stack.layers:
        core = cell.core_object
        configs.append(
            {
                "core": type(core).alias,
                "reset_after": getattr(core, "reset_after", True),
                "units": cell.units,
                "feedback_units": cell.feedback_units,
                "activation": core.default_activation,
            }
        )
    return configs


def _gaps(batch=3, time=7):
    """Gaps: row 0 ends early, row 1 skips steps 1 and 3."""
    mask = np.ones((batch, time), bool)
    mask[0, 5:] = False
    mask[1, [1, 3]] = False
    return mask


# (core, go_backwards, engine): every pair of values of two of the three in
# some row (pairwise, in place of the 12 rows of the full product): each core
# both ways on both engines, each engine both ways.
PLAIN_CASES = [
    ("simple", False, "reference"),
    ("simple", True, "xla"),
    ("gru", False, "xla"),
    ("gru", True, "reference"),
    ("lstm", False, "reference"),
    ("lstm", True, "xla"),
]


def test_the_plain_cases_cover_every_pair_of_options():
    options = [tuple(KERAS), (False, True), ("reference", "xla")]
    assert_covers_every_pair(PLAIN_CASES, options)


@pytest.mark.parametrize("core, go_backwards, engine", PLAIN_CASES)
def test_plain_stack_equals_keras_stacked_layers(core, go_backwards, engine, rng):
    """Outputs and gradients within 1e-6 of Keras's stacked layers with the
    same weights, masks with gaps (the Keras top layer gets the mask in the
    order its inputs come: reversed after a ``go_backwards`` bottom)."""
    x = tf.constant(rng.standard_normal((3, 7, 4)).astype("float32"))
    mask = _gaps()
    stack = FeedbackStack(
        [5, 6],
        core=core,
        top_down=None,
        return_sequences=True,
        go_backwards=go_backwards,
        engine=engine,
    )
    bottom = KERAS[core](5, return_sequences=True, go_backwards=go_backwards)
    top = KERAS[core](6, return_sequences=True)
    top(bottom(x))
    stack(x)
    _randomise(stack, rng)
    bottom.set_weights(stack.layers[0].get_weights())
    top.set_weights(stack.layers[1].get_weights())
    probe = rng.standard_normal((3, 7, 6)).astype("float32")
    top_mask = mask[:, ::-1] if go_backwards else mask
    results = []
    for run, weights in (
        (lambda: stack(x, mask=mask), stack.trainable_weights),
        (
            lambda: top(bottom(x, mask=mask), mask=top_mask),
            bottom.trainable_weights + top.trainable_weights,
        ),
    ):
        with tf.GradientTape() as tape:
            outputs = run()
            loss = tf.reduce_sum(outputs * probe)
        results.append((outputs, tape.gradient(loss, weights)))
    (ours, our_grads), (theirs, their_grads) = results
    assert relative_error(ours, theirs) < 1e-6
    assert len(our_grads) == len(their_grads)
    for a, b in zip(our_grads, their_grads):
        # float32 sums in another order: 1e-6 of the gradient's magnitude.
        assert relative_error(a, b) < 1e-6


CASES = [
    ("simple", "gated"),
    ("simple", "ungated"),
    ("gru", "gated"),
    ("gru", "ungated"),
    ("gru", None),
    ("gru_cho", "gated"),
    ("lstm", "gated"),
    ("lstm", "ungated"),
    ("indrnn", "gated"),
]


def _core(name):
    return cores.GRUCore(reset_after=False) if name == "gru_cho" else name


@pytest.mark.parametrize("core,top_down", CASES)
def test_stack_against_numpy_reference(core, top_down, rng):
    """Every layer's outputs, the final states and every gradient (float64)
    against the paper's equations, 1e-12 relative, with feedback in two of
    the three layers and masks with gaps; both engines agree to 1e-12.
    Gradients of the reference are complex-step derivatives (exact to
    rounding)."""
    x = rng.standard_normal((3, 7, 3))
    mask = _gaps()
    stacks = {}
    for engine in ("reference", "xla"):
        stacks[engine] = FeedbackStack(
            [4, 3, 5],
            core=_core(core),
            feedback_units=[2, 0, 3],
            top_down=top_down,
            return_sequences=True,
            return_all_layers=True,
            return_state=True,
            engine=engine,
            dtype="float64",
        )
        stacks[engine].build(x.shape)  # no call: it would compile an unused loop
    _randomise(stacks["reference"], rng)
    stacks["xla"].set_weights(stacks["reference"].get_weights())
    layers, across = _reference_weights(stacks["reference"])
    cfgs = _configs(stacks["reference"])
    expected, states = stack_sequence(layers, across, x, cfgs, top_down, mask=mask)
    probes = [rng.standard_normal(e.shape) for e in expected]

    def reference_loss(layers, across):
        outputs, final = stack_sequence(layers, across, x, cfgs, top_down, mask=mask)
        return sum(np.sum(o * p) for o, p in zip(outputs, probes)) + sum(
            np.sum(s**2) for s in final
        )

    grads = {}
    for engine, stack in stacks.items():
        with tf.GradientTape() as tape:
            result = stack(x, mask=mask)
            outputs, final = result[0], result[1:]
            loss = sum(tf.reduce_sum(o * p) for o, p in zip(outputs, probes))
            loss += sum(tf.reduce_sum(s**2) for s in final)
        grads[engine] = tape.gradient(loss, stack.trainable_weights)
        for a, b in zip(outputs, expected):
            assert relative_error(a, b) < 1e-12
        assert len(final) == len(states)
        for a, b in zip(final, states):
            assert relative_error(a, b) < 1e-12
    for a, b in zip(grads["xla"], grads["reference"]):
        assert relative_error(a, b) < 1e-12
    # Each weight's gradient along a random direction, by complex step.
    by_variable = dict(
        zip(map(id, stacks["reference"].trainable_weights), grads["reference"])
    )
    step = 1e-30
    for j, cell in enumerate(stacks["reference"].layers):
        for v in cell.trainable_weights:
            direction = rng.standard_normal(v.shape)
            moved = [dict(w) for w in layers]
            moved[j][v.name] = layers[j][v.name] + 1j * step * direction
            numeric = np.imag(reference_loss(moved, across)) / step
            analytic = np.sum(by_variable[id(v)].numpy() * direction)
            assert abs(analytic - numeric) <= 1e-12 * max(1.0, abs(numeric)), v.name
    for j, weights in enumerate(stacks["reference"].cell._stack_weights):
        for name, v in weights.items():
            direction = rng.standard_normal(v.shape)
            moved = [dict(w) for w in across]
            moved[j][name] = across[j][name] + 1j * step * direction
            numeric = np.imag(reference_loss(layers, moved)) / step
            analytic = np.sum(by_variable[id(v)].numpy() * direction)
            assert abs(analytic - numeric) <= 1e-12 * max(1.0, abs(numeric)), name


@pytest.mark.parametrize("core", ["gru", "lstm", "simple"])
def test_gated_gradients_engines_and_finite_differences(core, rng):
    """The fused engine's gradients equal the reference engine's (float64,
    1e-10) and central finite differences."""
    x = tf.constant(rng.standard_normal((2, 5, 3)))
    mask = np.ones((2, 5), bool)
    mask[0, 3:] = False
    stacks = {}
    for engine in ("reference", "xla"):
        stack = FeedbackStack(
            [4, 3],
            core=core,
            feedback_units=[2, 1],
            top_down="gated",
            return_sequences=True,
            engine=engine,
            dtype="float64",
        )
        stack.build(x.shape)  # no call: it would compile an unused loop
        stacks[engine] = stack
    _randomise(stacks["reference"], rng)
    stacks["xla"].set_weights(stacks["reference"].get_weights())
    probe = rng.standard_normal((2, 5, 3))
    grads = {}
    for engine, stack in stacks.items():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(stack(x, mask=mask) * probe)
        grads[engine] = tape.gradient(loss, stack.trainable_weights)
    for a, b in zip(grads["xla"], grads["reference"]):
        assert relative_error(a, b) < 1e-10
    stack = stacks["xla"]
    check_directional_derivatives(
        lambda: tf.reduce_sum(stack(x, mask=mask) * probe),
        stack.trainable_weights,
        rng,
    )


def test_step_streams_the_sequence_and_mask_holds_states(rng):
    x = rng.standard_normal((3, 6, 4)).astype("float32")
    mask = np.ones((3, 6), bool)
    mask[0, 4:] = False
    stack = FeedbackStack(
        [5, 4], core="lstm", feedback_units=[3, 2], return_sequences=True
    )
    stack(x)
    _randomise(stack, rng)
    outputs, _ = stream_steps(stack, x, mask)
    np.testing.assert_allclose(outputs, stack(x, mask=mask), atol=1e-5)
    assert stack.state_names == ["h_0", "carry_0", "c_0", "h_1", "carry_1", "c_1"]
    # Masked trailing steps: the final states of the shorter sequence.
    stack.return_state = True
    _, *held = stack(x, mask=mask)
    _, *short = stack(x[:1, :4])
    for a, b in zip(held, short):
        np.testing.assert_allclose(a[:1], b, atol=1e-6)


def test_stateful_chains_calls(rng):
    x = rng.standard_normal((2, 8, 3)).astype("float32")
    whole = FeedbackStack([4, 4], core="gru", feedback_units=2)
    whole(x)
    _randomise(whole, rng)
    inputs = keras.Input(batch_shape=(2, None, 3))
    stateful = FeedbackStack([4, 4], core="gru", feedback_units=2, stateful=True)
    stateful(inputs)
    stateful.set_weights(whole.get_weights())
    stateful(x[:, :5])
    np.testing.assert_allclose(stateful(x[:, 5:]), whole(x), atol=1e-5)
    stateful.reset_state()
    np.testing.assert_allclose(stateful(x), whole(x), atol=1e-5)


def test_config_saving_bidirectional_and_mixed_precision(rng, tmp_path):
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    stack = FeedbackStack(
        [4, 3],
        core=["lstm", cores.GRUCore(reset_after=False)],
        feedback_units=[2, 0],
        top_down="gated",
        return_sequences=True,
    )
    inputs = keras.Input((None, 3))
    outputs = keras.layers.Bidirectional(stack)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(outputs))
    _randomise(model.layers[1], rng)
    expected = model(x)
    forward = model.layers[1].forward_layer
    backward = model.layers[1].backward_layer
    np.testing.assert_allclose(
        model.layers[1](x),
        np.concatenate([forward(x), np.flip(backward(x), 1)], -1),
        atol=1e-6,
    )
    config = stack.get_config()
    clone = FeedbackStack.from_config(config)
    assert clone.get_config() == config
    assert clone.core == ["lstm", cores.GRUCore(reset_after=False)]
    path = tmp_path / "stack.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x), expected, atol=1e-6)
    half = FeedbackStack([4, 3], core="gru", feedback_units=2, dtype="mixed_float16")
    full = FeedbackStack([4, 3], core="gru", feedback_units=2)
    full(x), half(x)
    half.set_weights(full.get_weights())
    result = half(x)
    assert result.dtype == tf.float16
    np.testing.assert_allclose(result, full(x), atol=2e-2)


def test_return_all_layers_shapes(rng):
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    inputs = keras.Input((5, 3))
    stack = FeedbackStack(
        [4, 6], core="simple", return_all_layers=True, return_sequences=True
    )
    outputs = stack(inputs)
    assert [tuple(o.shape) for o in outputs] == [(None, 5, 4), (None, 5, 6)]
    model = keras.Model(inputs, outputs)
    low, high = model(x)
    assert low.shape == (2, 5, 4) and high.shape == (2, 5, 6)
    top = FeedbackStack([4, 6], core="simple")
    top(x)
    top.set_weights(stack.get_weights())
    np.testing.assert_allclose(top(x), high[:, -1], atol=1e-6)


def test_exports(rng, tmp_path):
    x = rng.standard_normal((2, 6, 3)).astype("float32")
    inputs = keras.Input((None, 3))
    stack = FeedbackStack(
        [4, 3],
        core="gru",
        feedback_units=[2, 0],
        top_down="gated",
        return_sequences=True,
    )
    model = keras.Model(inputs, keras.layers.Dense(2)(stack(inputs)))
    _randomise(stack, rng)
    export.export_saved_model(model, tmp_path / "saved")
    report = export.verify_saved_model(model, tmp_path / "saved", x)
    assert report["serving_max_abs_error"] <= 1e-5, report
    assert report["step_max_abs_error"] <= 1e-5, report
    for streaming in (False, True):
        lite = export.export_litert(
            model, tmp_path / f"m{int(streaming)}.tflite", streaming=streaming
        )
        report = export.verify_litert(model, lite, x)
        assert report["max_abs_error"] <= 1e-5, report
        ops = export.litert_ops(lite)
        assert all(op.isupper() and not op.startswith("BUILTIN_") for op in ops), ops


class _NoScaleCore(cores.SimpleCore):
    """A user core whose update has the earlier signature."""

    def update(self, ops, projected, states, candidate_term=None):
        return super().update(ops, projected, states, candidate_term)


def test_errors():
    with pytest.raises(TypeError, match="`units`"):
        FeedbackStack(8)
    with pytest.raises(ValueError, match=r"units\[1\]"):
        FeedbackStack([8, 0])
    with pytest.raises(ValueError, match="`feedback_units`.*one value per layer"):
        FeedbackStack([8, 8], feedback_units=[1, 2, 3])
    with pytest.raises(ValueError, match="`top_down`"):
        FeedbackStack([8, 8], top_down="yes")
    with pytest.raises(TypeError, match="`return_all_layers`"):
        FeedbackStack([8, 8], return_all_layers="True")
    with pytest.raises(ValueError, match="candidate_scale"):
        FeedbackStack([8, 8], core=_NoScaleCore())
    FeedbackStack([8, 8], core=_NoScaleCore(), top_down="ungated")
    with pytest.raises(ValueError, match="top_down='gated'"):
        FeedbackStack([8, 8], core=[keras.layers.GRUCell(8), keras.layers.GRUCell(8)])
    with pytest.raises(ValueError, match="one cell per layer"):
        FeedbackStack([8, 8], core=keras.layers.GRUCell(8), top_down=None)
    cells = [keras.layers.GRUCell(8), keras.layers.GRUCell(8)]
    stack = FeedbackStack([8, 8], core=cells, top_down=None)
    assert stack(np.zeros((1, 2, 3), "float32")).shape == (1, 8)


def test_trace_holds_each_layer_and_the_gates(rng):
    """The traced gates are the reference's ``g^{i->j}``; each layer's ``h``
    trace is its hidden state (its output without an output projection)."""
    x = rng.standard_normal((2, 5, 3))
    stack = FeedbackStack(
        [4, 3],
        core="simple",
        feedback_units=[2, 0],
        return_sequences=True,
        return_all_layers=True,
        return_trace=True,
        dtype="float64",
    )
    stack(x)
    _randomise(stack, rng)
    outputs, trace = stack(x)
    assert sorted(trace) == ["c_0", "gate_0", "gate_1", "h_0", "h_1"]
    layers, across = _reference_weights(stack)
    # g^{i->1}_t from the reference's own states: sigma(h^0_t w + h*_{t-1} u).
    h_star = np.concatenate([trace["h_0"], trace["h_1"]], -1)
    h_star = np.concatenate([np.zeros_like(h_star[:, :1]), h_star[:, :-1]], 1)
    expected = 1 / (
        1
        + np.exp(
            -(
                outputs[0] @ across[1]["gate_kernel"]
                + h_star @ across[1]["gate_recurrent_kernel"]
            )
        )
    )
    assert relative_error(trace["gate_1"], expected) < 1e-12
    assert relative_error(trace["h_1"], outputs[1]) < 1e-12


def test_step_with_every_layer_output(rng):
    """With return_all_layers, step returns (and takes as previous_output)
    the list of the layers' outputs; masked rows repeat it."""
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    mask = np.ones((2, 5), bool)
    mask[1, 2:] = False
    stack = FeedbackStack(
        [4, 3],
        core="gru",
        feedback_units=[2, 1],
        return_sequences=True,
        return_all_layers=True,
    )
    stack(x)
    _randomise(stack, rng)
    expected = stack(x, mask=mask)
    states = stack.get_initial_state(2)
    previous = [np.zeros((2, 4), "float32"), np.zeros((2, 3), "float32")]
    steps = []
    for t in range(5):
        previous, states = stack.step(
            x[:, t], states, mask=mask[:, t], previous_output=previous
        )
        assert isinstance(previous, list) and len(previous) == 2
        steps.append(previous)
    for j in range(2):
        np.testing.assert_allclose(
            np.stack([s[j] for s in steps], 1), expected[j], atol=1e-5
        )
