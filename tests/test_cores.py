"""Open cores: the core objects, IndRNN, Keras's GRU(reset_after=False), a
user core written here, aliases and configs.

Gradients against the numpy reference are complex-step derivatives
(``Im f(w + i h d) / h``, h = 1e-30): exact to rounding, so the float64
checks hold at 1e-12.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import relative_error
from helpers import stream_steps
from helpers import weights_by_name
from numpy_reference import feedback_sequence

from keras_feedback import cores
from keras_feedback import export
from keras_feedback.layers import ConvFeedback2D
from keras_feedback.layers import Feedback
from keras_feedback.layers import convert

TIGHT = 1e-12


def _mask(batch=3, time=7):
    """Gaps: row 0 ends early, row 1 skips steps 1 and 3."""
    mask = np.ones((batch, time), bool)
    mask[0, 5:] = False
    mask[1, [1, 3]] = False
    return mask


def _set_random(layer, rng, scale=0.5, positive=()):
    """Random weights; those named in ``positive`` uniform in [0.3, 1)."""
    values = []
    for v in layer.weights:
        name = v.name
        if name in positive:
            values.append(rng.uniform(0.3, 1.0, v.shape))
        else:
            values.append(scale * rng.standard_normal(v.shape))
    layer.set_weights([np.asarray(a, v.dtype) for a, v in zip(values, layer.weights)])


def _tf_loss_and_grads(layer, x, mask, probe):
    """``sum(outputs * probe) + sum(states ** 2)`` and its gradient by name."""
    with tf.GradientTape() as tape:
        result = layer(tf.constant(x), mask=mask)
        outputs, states = result[0], result[1:]
        loss = tf.reduce_sum(outputs * probe) + sum(tf.reduce_sum(s**2) for s in states)
    grads = tape.gradient(loss, layer.trainable_weights)
    return result, {v.name: g.numpy() for v, g in zip(layer.trainable_weights, grads)}


def _check_against_numpy(layer, cfg, x, mask, rng, go_backwards=False):
    """Outputs, states and every gradient of ``layer`` (float64) against the
    numpy reference, 1e-12 relative."""
    weights = weights_by_name(layer)
    ref_out, ref_states, _ = feedback_sequence(
        weights, x, cfg, mask=mask, go_backwards=go_backwards
    )
    probe = rng.standard_normal(ref_out.shape)
    result, grads = _tf_loss_and_grads(layer, x, mask, probe)
    assert relative_error(result[0], ref_out) < TIGHT
    assert len(result) - 1 == len(ref_states)
    for a, b in zip(result[1:], ref_states):
        assert relative_error(a, b) < TIGHT

    def loss(w):
        out, states, _ = feedback_sequence(
            w, x, cfg, mask=mask, go_backwards=go_backwards
        )
        return np.sum(out * probe) + sum(np.sum(s**2) for s in states)

    step = 1e-30
    for name in weights:
        direction = rng.standard_normal(weights[name].shape)
        moved = dict(weights)
        moved[name] = weights[name] + 1j * step * direction
        numeric = np.imag(loss(moved)) / step
        analytic = np.sum(grads[name] * direction)
        assert abs(analytic - numeric) <= TIGHT * max(1.0, abs(numeric)), name


# --- IndRNN --------------------------------------------------------------


@pytest.mark.parametrize("feedback_units", [0, 3])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_indrnn_equals_numpy_with_gradients(rng, feedback_units, go_backwards):
    cfg = dict(core="indrnn", units=4, feedback_units=feedback_units, activation="relu")
    layer = Feedback(
        4,
        feedback_units=feedback_units,
        core="indrnn",
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
        engine="reference",
        dtype="float64",
    )
    x = rng.standard_normal((3, 7, 2))
    layer(x)
    _set_random(layer, rng, positive=("recurrent_kernel",))
    assert layer.cell.activation is keras.activations.relu
    _check_against_numpy(layer, cfg, x, _mask(), rng, go_backwards)


def test_indrnn_engines_agree_and_the_constraint_holds(rng):
    T = 7
    core = cores.IndRNNCore(recurrent_max_abs=2 ** (1 / T), recurrent_min_abs=0.5)
    x = rng.standard_normal((3, T, 2))
    mask = _mask()
    results = []
    for engine in ("reference", "xla"):
        layer = Feedback(
            4,
            feedback_units=3,
            core=core,
            return_sequences=True,
            return_state=True,
            engine=engine,
            dtype="float64",
            name=f"indrnn_{engine}",
        )
        layer(x)
        u = layer.cell.recurrent_kernel.numpy()
        assert u.shape == (4,) and np.all((u >= 0.5) & (u <= 1.0)), u
        _set_random(layer, np.random.default_rng(1))
        probe = np.random.default_rng(2).standard_normal((3, T, 4))
        results.append(_tf_loss_and_grads(layer, x, mask, probe))
    (out_a, grads_a), (out_b, grads_b) = results
    for a, b in zip(out_a, out_b):
        assert relative_error(a, b) < TIGHT
    for name in grads_a:
        assert relative_error(grads_a[name], grads_b[name]) < TIGHT, name
    # The constraint: |u| in [0.5, 2^(1/T)] after a training step, signs kept.
    layer = Feedback(4, feedback_units=3, core=core, return_sequences=True)
    model = keras.Sequential([keras.Input((T, 2)), layer, keras.layers.Dense(1)])
    layer.cell.recurrent_kernel.assign([-3.0, -0.1, 0.2, 5.0])
    model.compile(keras.optimizers.SGD(1e-9), "mse")
    model.fit(x, np.zeros((3, T, 1)), epochs=1, verbose=0)
    u = layer.cell.recurrent_kernel.numpy()
    high = 2 ** (1 / T)
    np.testing.assert_allclose(np.abs(u), [high, 0.5, 0.5, high], rtol=1e-6)
    assert list(np.sign(u)) == [-1, -1, 1, 1]


def test_indrnn_argument_errors():
    with pytest.raises(ValueError, match="`recurrent_max_abs` must be a positive"):
        cores.IndRNNCore(recurrent_max_abs=0)
    with pytest.raises(ValueError, match="`recurrent_min_abs`=2.0 is larger than"):
        cores.IndRNNCore(recurrent_max_abs=1.0, recurrent_min_abs=2.0)


# --- GRU(reset_after=False) ---------------------------------------------


@pytest.mark.parametrize("recurrent_dropout", [0.0, 0.3])
def test_gru_reset_after_false_equals_keras(rng, recurrent_dropout):
    x = rng.standard_normal((3, 6, 4)).astype("float32")
    kwargs = dict(return_sequences=True, return_state=True, reset_after=False)
    theirs = keras.layers.GRU(5, **kwargs)
    theirs(x)
    theirs.set_weights([0.5 * rng.standard_normal(w.shape) for w in theirs.weights])
    ours = Feedback.from_keras(theirs)
    assert ours.core == cores.GRUCore(reset_after=False)
    assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]
    mask = _mask(3, 6)
    xt = tf.constant(x)
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            out = layer(xt, mask=mask)
            loss = tf.reduce_sum(out[0] ** 2) + tf.reduce_sum(tf.sin(out[1]))
        results.append((out, tape.gradient(loss, [xt, *layer.trainable_weights])))
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # `convert` takes it inside a model.
    model = keras.Sequential(
        [keras.Input((6, 4)), keras.layers.GRU(5, reset_after=False)]
    )
    converted = convert(model)
    np.testing.assert_allclose(converted(x), model(x), atol=1e-6)


def test_gru_reset_after_false_with_feedback_equals_numpy(rng):
    cfg = dict(core="gru", reset_after=False, units=4, feedback_units=2)
    layer = Feedback(
        4,
        feedback_units=2,
        reset_after=False,
        return_sequences=True,
        return_state=True,
        dtype="float64",
    )
    assert layer.core == cores.GRUCore(reset_after=False)
    x = rng.standard_normal((3, 7, 3))
    layer(x)
    _set_random(layer, rng)
    _check_against_numpy(layer, cfg, x, _mask(), rng)


# --- a user core ---------------------------------------------------------


@keras.saving.register_keras_serializable(package="tests")
class PeepholeLSTM(cores.Core):
    """Gers & Schmidhuber's peephole LSTM (tensorflow-addons'
    ``PeepholeLSTMCell``): the gates also read the cell state."""

    state_names = ("h", "carry")

    def width(self, units):
        return 4 * units

    def weights(self, units):
        return (
            cores.Weight("recurrent_kernel", ("linear", units, 4 * units), "recurrent"),
            cores.Weight("bias", (4 * units,), "bias"),
            cores.Weight(
                "peephole", (3, units), "recurrent", lambda _: "glorot_uniform"
            ),
        )

    def update(self, ops, projected, states, candidate_term=None):
        _, carry = states
        peep = ops.params["peephole"]
        z_i, z_f, z_g, z_o = tf.split(
            projected + ops.product("recurrent_kernel"), 4, axis=-1
        )
        i = ops.recurrent_activation(z_i + peep[0] * carry)
        f = ops.recurrent_activation(z_f + peep[1] * carry)
        new_carry = f * carry + i * ops.activation(z_g)
        o = ops.recurrent_activation(z_o + peep[2] * new_carry)
        return [o * ops.activation(new_carry), new_carry]

    def deferred(self):
        return (("recurrent_kernel", True),)


def _peephole_numpy(w, xs, units, mask):
    """The peephole LSTM with feedback, written from its equations."""
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    batch = xs.shape[0]
    h, carry = np.zeros((batch, units)), np.zeros((batch, units))
    c = np.zeros((batch, w["feedback_kernel"].shape[1]))
    outs = []
    for t in range(xs.shape[1]):
        pre = (
            xs[:, t] @ w["kernel"]
            + c @ w["feedback_recurrent_kernel"]
            + h @ w["recurrent_kernel"]
            + w["bias"]
        )
        zi, zf, zg, zo = np.split(pre, 4, -1)
        p = w["peephole"]
        i, f = sig(zi + p[0] * carry), sig(zf + p[1] * carry)
        carry2 = f * carry + i * np.tanh(zg)
        h2 = sig(zo + p[2] * carry2) * np.tanh(carry2)
        c2 = sig(h2 @ w["feedback_kernel"] + w["feedback_bias"])
        keep = mask[:, t : t + 1]
        h, carry, c = (
            np.where(keep, a, b) for a, b in ((h2, h), (carry2, carry), (c2, c))
        )
        outs.append(h)
    return np.stack(outs, 1), [h, carry, c]


def test_user_core_equals_numpy_and_engines_agree(rng):
    x = rng.standard_normal((3, 7, 2))
    mask = _mask()
    results = []
    for engine in ("reference", "xla"):
        layer = Feedback(
            4,
            feedback_units=3,
            core=PeepholeLSTM(),
            return_sequences=True,
            return_state=True,
            engine=engine,
            dtype="float64",
        )
        layer(x)
        _set_random(layer, np.random.default_rng(5))
        assert layer.state_names == ["h", "carry", "c"]
        probe = np.random.default_rng(6).standard_normal((3, 7, 4))
        results.append(_tf_loss_and_grads(layer, x, mask, probe))
    out, states = feedback_reference = _peephole_numpy(
        weights_by_name(layer), x, 4, mask
    )
    del feedback_reference
    assert relative_error(results[0][0][0], out) < TIGHT
    for a, b in zip(results[0][0][1:], states):
        assert relative_error(a, b) < TIGHT
    for a, b in zip(results[0][0], results[1][0]):
        assert relative_error(a, b) < TIGHT
    for name, grad in results[0][1].items():
        assert relative_error(grad, results[1][1][name]) < TIGHT, name


CORE_CASES = {
    "indrnn": dict(core=cores.IndRNNCore(recurrent_max_abs=1.2)),
    "gru_reset_before": dict(core="gru", reset_after=False),
    "peephole": dict(core=PeepholeLSTM()),
}


@pytest.mark.parametrize("case", sorted(CORE_CASES))
def test_core_step_saving_and_exports(rng, tmp_path, case):
    """``step`` over time equals the call; ``.keras`` round trip; SavedModel
    and LiteRT (whole sequence and streaming) within 1e-5, builtin ops."""
    kwargs = CORE_CASES[case]
    inputs = keras.Input((None, 3))
    h = Feedback(4, feedback_units=2, return_sequences=True, attention=True, **kwargs)(
        inputs
    )
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    x = rng.standard_normal((2, 6, 3)).astype("float32")
    layer = model.layers[1]
    _set_random(layer, rng, positive=("recurrent_kernel",) if case == "indrnn" else ())
    expected = model(x)
    outputs, _ = stream_steps(layer, x)
    assert relative_error(outputs, layer(x)) < 1e-5
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.layers[1].core == layer.core
    np.testing.assert_allclose(loaded(x), expected, atol=1e-6)
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
        # Builtin ops read as their schema names (a custom op as its code).
        assert all(op.isupper() and not op.startswith("BUILTIN_") for op in ops), ops


def test_conv_feedback_runs_any_core(rng):
    """A core's linear weights become convolutions, its vectors broadcast
    over the map: both engines agree (float64)."""
    x = rng.standard_normal((2, 3, 5, 5, 2))
    for core in (cores.IndRNNCore(), PeepholeLSTM(), cores.GRUCore(reset_after=False)):
        outs = []
        for engine in ("reference", "xla"):
            layer = ConvFeedback2D(
                3,
                3,
                padding="same",
                feedback_filters=2,
                core=core,
                engine=engine,
                dtype="float64",
            )
            layer(x)
            _set_random(layer, np.random.default_rng(3))
            outs.append(layer(x))
        assert relative_error(outs[0], outs[1]) < TIGHT, core


# --- aliases, configs, errors ----------------------------------------------


def test_aliases_and_configs():
    for alias, cls in [
        ("simple", cores.SimpleCore),
        ("gru", cores.GRUCore),
        ("lstm", cores.LSTMCore),
        ("indrnn", cores.IndRNNCore),
    ]:
        layer = Feedback(3, core=alias)
        assert layer.core == alias and type(layer.cell.core_object) is cls
        assert layer.get_config()["core"] == alias
        assert Feedback(3, core=cls()).core == alias  # default options: the alias
    # A configured core is written as an object and read back.
    layer = Feedback(3, core="lstm", unit_forget_bias=False)
    config = layer.get_config()
    assert config["core"]["class_name"] == "LSTMCore"
    clone = Feedback.from_config(config)
    assert clone.core == cores.LSTMCore(unit_forget_bias=False)
    assert clone.get_config() == config
    # A config of the earlier versions (unit_forget_bias written for every core).
    old = {**Feedback(3, core="gru").get_config(), "unit_forget_bias": True}
    assert Feedback.from_config(old).core == "gru"
    assert cores.get(cores.serialize(cores.IndRNNCore(2.0))) == cores.IndRNNCore(2.0)


def test_core_argument_errors():
    with pytest.raises(ValueError, match=r"`reset_after`=True contradicts `core`"):
        Feedback(3, core=cores.GRUCore(reset_after=False), reset_after=True)
    with pytest.raises(ValueError, match=r"`unit_forget_bias`=False contradicts"):
        Feedback(3, core=cores.LSTMCore(), unit_forget_bias=False)
    with pytest.raises(ValueError, match="Argument `core` must be one of"):
        Feedback(3, core="transformer")
    with pytest.raises(TypeError, match="Argument `core` must be a core alias"):
        Feedback(3, core=3)
    with pytest.raises(TypeError, match="Argument `reset_after` must be True or False"):
        Feedback(3, reset_after="no")


# --- any Keras cell gets feedback -------------------------------------------


@keras.saving.register_keras_serializable(package="tests")
class MinimalKerasCell(keras.layers.Layer):
    """A Keras cell written here: ``h_t = tanh(x_t W + h_{t-1} U)``."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
        self.u = self.add_weight(shape=(self.units, self.units), name="u")

    def call(self, inputs, states):
        h = keras.ops.tanh(inputs @ self.w + states[0] @ self.u)
        return h, [h]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _keras_cell_numpy(cell_step, w_fb, xs, feedback_units, units):
    """The cell run on ``[x_t; c_{t-1}]``, ``c_t = σ(h_t W_c + b_c)``."""
    batch = xs.shape[0]
    h = np.zeros((batch, units))
    c = np.zeros((batch, feedback_units))
    outs = []
    for t in range(xs.shape[1]):
        h = cell_step(np.concatenate([xs[:, t], c], -1), h)
        c = 1 / (1 + np.exp(-(h @ w_fb["feedback_kernel"] + w_fb["feedback_bias"])))
        outs.append(h)
    return np.stack(outs, 1), h, c


@pytest.mark.parametrize("kind", ["gru_cell", "minimal"])
def test_keras_cell_with_feedback_equals_numpy(rng, kind):
    units, fb = 4, 3
    cell = (
        keras.layers.GRUCell(units) if kind == "gru_cell" else MinimalKerasCell(units)
    )
    layer = Feedback(
        units, feedback_units=fb, core=cell, return_sequences=True, return_state=True
    )
    x = rng.standard_normal((2, 6, 3)).astype("float32")
    layer(x)
    _set_random(layer, rng)
    w = {v.name: np.asarray(v.numpy(), "float64") for v in layer.weights}
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    if kind == "gru_cell":

        def cell_step(xc, h):
            xz, xr, xh = np.split(xc @ w["kernel"] + w["bias"][0], 3, -1)
            rz, rr, rh = np.split(h @ w["recurrent_kernel"] + w["bias"][1], 3, -1)
            z, r = sig(xz + rz), sig(xr + rr)
            return z * h + (1 - z) * np.tanh(xh + r * rh)
    else:

        def cell_step(xc, h):
            return np.tanh(xc @ w["w"] + h @ w["u"])

    out, h, c = _keras_cell_numpy(cell_step, w, x.astype("float64"), fb, units)
    result = layer(x)
    assert layer.state_names == ["h", "cell_0", "c"]
    np.testing.assert_allclose(result[0], out, atol=1e-6)
    np.testing.assert_allclose(result[1], h, atol=1e-6)
    np.testing.assert_allclose(result[2], h, atol=1e-6)
    np.testing.assert_allclose(result[3], c, atol=1e-6)


def test_keras_cell_saves_exports_and_refuses_what_it_cannot(rng, tmp_path):
    inputs = keras.Input((None, 3))
    h = Feedback(
        4, feedback_units=2, core=keras.layers.LSTMCell(4), return_sequences=True
    )(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    _set_random(model.layers[1], rng)
    expected = model(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) ** 2)
    assert all(g is not None for g in tape.gradient(loss, model.trainable_weights))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(x), expected, atol=1e-6)
    for streaming in (False, True):
        lite = export.export_litert(
            model, tmp_path / f"m{int(streaming)}.tflite", streaming=streaming
        )
        assert export.verify_litert(model, lite, x)["max_abs_error"] <= 1e-5
    with pytest.raises(ValueError, match="runs on the reference engine only"):
        Feedback(4, core=keras.layers.GRUCell(4), engine="xla")
    with pytest.raises(ValueError, match="has dropout=0.5"):
        Feedback(4, core=keras.layers.GRUCell(4, dropout=0.5))
    with pytest.raises(ValueError, match="`units`=5 must equal the output size"):
        Feedback(5, core=keras.layers.GRUCell(4))
