"""ConvFeedback2D: parity with ConvLSTM2D, with a numpy reference, between engines."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import LayerTestCase

import keras_feedback

ConvFeedback2D = keras_feedback.layers.ConvFeedback2D

ACT = {
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0.0),
    None: lambda x: x,
}


# --- a numpy reference, written from the equations ---------------------------


def np_conv(x, kernel, stride=(1, 1), padding="same", dilation=(1, 1)):
    """2-D convolution of ``x`` (B, H, W, C) as TensorFlow defines it."""
    batch, height, width, _ = x.shape
    kh, kw, _, out = kernel.shape
    span_h = dilation[0] * (kh - 1) + 1
    span_w = dilation[1] * (kw - 1) + 1
    if padding == "same":
        oh, ow = -(-height // stride[0]), -(-width // stride[1])
        pad_h = max((oh - 1) * stride[0] + span_h - height, 0)
        pad_w = max((ow - 1) * stride[1] + span_w - width, 0)
        x = np.pad(
            x,
            (
                (0, 0),
                (pad_h // 2, pad_h - pad_h // 2),
                (pad_w // 2, pad_w - pad_w // 2),
                (0, 0),
            ),
        )
    else:
        oh = (height - span_h) // stride[0] + 1
        ow = (width - span_w) // stride[1] + 1
    result = np.zeros((batch, oh, ow, out))
    for i in range(kh):
        for j in range(kw):
            rows = x[:, i * dilation[0] :: stride[0]][:, :oh]
            patch = rows[:, :, j * dilation[1] :: stride[1]][:, :, :ow]
            result += patch @ kernel[i, j]
    return result


def np_layer_norm(x, gamma, beta, eps=1e-3):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + eps) * gamma + beta


def np_conv_cell_sequence(w, xs, cfg):
    """Runs the conv feedback cell over ``xs`` (B, T, H, W, C) in numpy."""
    act = cfg.get("activation", "tanh")
    act = act if callable(act) else ACT[act]
    rec_act = ACT["sigmoid"]
    fb_act = ACT[cfg.get("feedback_activation", "sigmoid")]
    out_act = ACT[cfg.get("output_activation")]
    core, fb = cfg["core"], cfg["feedback_filters"]
    stride, padding = cfg.get("strides", (1, 1)), cfg.get("padding", "same")
    bias = w.get("bias")
    inputs = [
        np_conv(xs[:, t], w["kernel"], stride, padding) for t in range(xs.shape[1])
    ]
    shape = inputs[0].shape[:3] + (cfg["filters"],)
    h = np.zeros(shape)
    carry = np.zeros(shape)
    c = np.zeros(shape[:3] + (fb,)) if fb else None
    outputs, trace = [], {"h": [], "c": [], "alpha": []}
    for xin in inputs:
        if fb:
            xin = xin + np_conv(c, w["feedback_recurrent_kernel"])
        rec = np_conv(h, w["recurrent_kernel"])
        if core == "simple":
            h_new = act(xin + rec + bias)
        elif core == "gru":
            xin, rec = xin + bias[0], rec + bias[1]
            xz, xr, xh = np.split(xin, 3, -1)
            rz, rr, rh = np.split(rec, 3, -1)
            z, r = rec_act(xz + rz), rec_act(xr + rr)
            h_new = z * h + (1 - z) * act(xh + r * rh)
        else:
            i, f, g, o = np.split(xin + rec + bias, 4, -1)
            carry = rec_act(f) * carry + rec_act(i) * act(g)
            h_new = rec_act(o) * act(carry)
        if cfg.get("layer_norm"):
            h_new = np_layer_norm(h_new, w["layer_norm_gamma"], w["layer_norm_beta"])
        if cfg.get("residual"):
            h_new = h + h_new
        h = h_new
        readout = [h]
        if fb:
            c = fb_act(np_conv(h, w["feedback_kernel"]) + w["feedback_bias"])
            readout.append(c)
        gated = h
        if cfg.get("attention"):
            alpha = ACT["sigmoid"](
                np_conv(np.concatenate(readout, -1), w["attention_kernel"])
                + w["attention_bias"]
            )
            gated = alpha * h
            trace["alpha"].append(alpha)
        y = gated
        if cfg.get("output_filters"):
            y = out_act(
                np_conv(np.concatenate([gated] + readout[1:], -1), w["output_kernel"])
                + w["output_bias"]
            )
        outputs.append(y)
        trace["h"].append(h)
        trace["c"].append(c)
    trace = {k: np.stack(v, 1) for k, v in trace.items() if v and v[0] is not None}
    return np.stack(outputs, 1), trace


def _randomise(layer, rng, scale=0.4):
    layer.set_weights(
        [
            scale * rng.standard_normal(w.shape).astype(w.dtype)
            for w in layer.get_weights()
        ]
    )


def _weights(layer):
    return {v.name: np.asarray(v.numpy(), "float64") for v in layer.weights}


def _max_error(a, b):
    return float(np.max(np.abs(np.asarray(a, "float64") - np.asarray(b, "float64"))))


# --- feedback off == ConvLSTM2D ----------------------------------------------


@pytest.mark.parametrize(
    "conv",
    [
        dict(padding="same"),
        dict(padding="valid", strides=2),
        dict(padding="valid", dilation_rate=2),
    ],
    ids=["same", "valid-stride2", "valid-dilated"],
)
@pytest.mark.parametrize("engine", ["reference", "xla"])
def test_feedback_off_equals_conv_lstm2d(rng, conv, engine):
    x = rng.standard_normal((2, 4, 7, 7, 2)).astype("float32")
    kwargs = dict(return_sequences=True, return_state=True, **conv)
    ours = ConvFeedback2D(
        3, 3, feedback_filters=0, core="lstm", engine=engine, **kwargs
    )
    theirs = keras.layers.ConvLSTM2D(3, 3, **kwargs)
    ours(x)
    theirs(x)
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]
    assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]
    _randomise(theirs, rng)
    ours.set_weights(theirs.get_weights())
    xt = tf.constant(x)
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            out = layer(xt)
            loss = tf.reduce_sum(out[0] ** 2) + tf.reduce_sum(tf.sin(out[2]))
        results.append((out, tape.gradient(loss, [xt] + layer.trainable_weights)))
    (out_a, grad_a), (out_b, grad_b) = results
    errors = [_max_error(a, b) for a, b in zip(out_a, out_b)]
    grad_errors = [_max_error(a, b) for a, b in zip(grad_a, grad_b)]
    print(
        f"ConvLSTM2D parity {conv} {engine}: outputs {max(errors):.2e}, "
        f"gradients {max(grad_errors):.2e}"
    )
    assert max(errors) < 1e-5
    assert max(grad_errors) < 1e-4


def test_feedback_off_equals_conv_lstm2d_masked_backwards(rng):
    x = rng.standard_normal((3, 5, 5, 5, 2)).astype("float32")
    mask = np.ones((3, 5), bool)
    mask[0, 3:] = False
    mask[1, 1] = False
    kwargs = dict(padding="same", return_sequences=True, go_backwards=True)
    ours = ConvFeedback2D(2, 3, feedback_filters=0, core="lstm", **kwargs)
    theirs = keras.layers.ConvLSTM2D(2, 3, **kwargs)
    ours(x)
    theirs(x)
    _randomise(theirs, rng)
    ours.set_weights(theirs.get_weights())
    np.testing.assert_allclose(ours(x, mask=mask), theirs(x, mask=mask), atol=1e-5)


# --- feedback on == numpy ----------------------------------------------------

NUMPY_CASES = {
    "simple": dict(core="simple"),
    "gru": dict(core="gru"),
    "lstm": dict(core="lstm"),
    "gru-attention-output": dict(core="gru", attention=True, output_filters=2),
    "lstm-residual-layernorm": dict(core="lstm", residual=True, layer_norm=True),
    "simple-relu-attention-valid-stride": dict(
        core="simple",
        activation="relu",
        attention=True,
        output_filters=3,
        output_activation="tanh",
        padding="valid",
        strides=(2, 1),
    ),
}


@pytest.mark.parametrize("case", list(NUMPY_CASES))
def test_feedback_on_equals_numpy(rng, case):
    cfg = {"filters": 3, "feedback_filters": 2, "padding": "same", **NUMPY_CASES[case]}
    x = rng.standard_normal((2, 3, 6, 5, 2)).astype("float32")
    layer = ConvFeedback2D(
        kernel_size=3,
        return_sequences=True,
        return_trace=True,
        engine="reference",
        **cfg,
    )
    layer(x)
    _randomise(layer, rng)
    outputs, trace = layer(x)
    cfg["strides"] = layer.strides
    expected, expected_trace = np_conv_cell_sequence(_weights(layer), x, cfg)
    error = _max_error(outputs, expected)
    print(f"numpy parity {case}: {error:.2e}")
    assert error < 2e-5
    assert sorted(trace) == sorted(expected_trace)
    for name in trace:
        assert _max_error(trace[name], expected_trace[name]) < 2e-5


@pytest.mark.parametrize("engine", ["reference", "xla"])
def test_learnable_activation_equals_numpy(rng, engine):
    x = rng.standard_normal((2, 3, 5, 5, 2)).astype("float32")
    layer = ConvFeedback2D(
        3,
        3,
        padding="same",
        feedback_filters=2,
        core="simple",
        activation=keras_feedback.activations.PReLU(),
        return_sequences=True,
        engine=engine,
    )
    layer(x)
    _randomise(layer, rng)
    alpha = layer.cell.activation.weights[0]
    assert alpha.shape == (3,)  # per channel
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        outputs = layer(xt)
        loss = tf.reduce_sum(outputs**2)
    grad = tape.gradient(loss, alpha.value)
    slope = alpha.numpy().astype("float64")
    cfg = {
        "core": "simple",
        "filters": 3,
        "feedback_filters": 2,
        "activation": lambda z: np.maximum(z, 0) + slope * np.minimum(z, 0),
    }
    expected, _ = np_conv_cell_sequence(_weights(layer), x, cfg)
    assert _max_error(outputs, expected) < 2e-5
    # The activation's parameter learns through the engine's loop.
    eps = 1e-3
    shifted = []
    for sign in (1, -1):
        alpha.assign(slope.astype("float32") + sign * eps * np.eye(3)[0])
        shifted.append(float(tf.reduce_sum(layer(xt) ** 2)))
    alpha.assign(slope.astype("float32"))
    numeric = (shifted[0] - shifted[1]) / (2 * eps)
    np.testing.assert_allclose(float(grad[0]), numeric, rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("core", ["gru", "lstm"])
def test_engines_agree_on_outputs_and_gradients(rng, core):
    x = tf.constant(rng.standard_normal((2, 4, 5, 5, 2)).astype("float32"))
    mask = np.ones((2, 4), bool)
    mask[1, 2:] = False
    results = []
    for engine in ("reference", "xla"):
        keras.utils.set_random_seed(3)
        layer = ConvFeedback2D(
            3,
            3,
            padding="same",
            feedback_filters=2,
            core=core,
            attention=True,
            return_sequences=True,
            return_state=True,
            engine=engine,
        )
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, mask=mask)
            loss = tf.reduce_sum(out[0] ** 2) + tf.reduce_sum(out[-1])
        results.append((out, tape.gradient(loss, [x] + layer.trainable_weights)))
    for a, b in zip(results[0][0], results[1][0]):
        assert _max_error(a, b) < 1e-5
    for a, b in zip(results[0][1], results[1][1]):
        assert _max_error(a, b) < 1e-4


def test_gradient_matches_finite_differences():
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    x = tf.constant(rng.standard_normal((1, 3, 4, 4, 1)))
    layer = ConvFeedback2D(
        2,
        3,
        padding="same",
        feedback_filters=1,
        core="gru",
        dtype="float64",
        engine="reference",
    )
    layer(x)
    _randomise(layer, rng, scale=0.6)
    kernel = layer.cell.feedback_recurrent_kernel

    def loss():
        return tf.reduce_sum(tf.sin(layer(x)))

    with tf.GradientTape() as tape:
        value = loss()
    gradient = tape.gradient(value, kernel.value).numpy()
    base = kernel.numpy()
    numeric = np.zeros_like(base)
    eps = 1e-6
    for index in np.ndindex(base.shape):
        for sign in (1, -1):
            shifted = base.copy()
            shifted[index] += sign * eps
            kernel.assign(shifted)
            numeric[index] += sign * float(loss()) / (2 * eps)
    kernel.assign(base)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-7)


def test_channels_first_equals_channels_last(rng):
    x = rng.standard_normal((2, 3, 5, 6, 2)).astype("float32")
    last = ConvFeedback2D(3, 3, padding="same", feedback_filters=2, return_state=True)
    first = ConvFeedback2D(
        3,
        3,
        padding="same",
        feedback_filters=2,
        return_state=True,
        data_format="channels_first",
    )
    x_first = np.transpose(x, (0, 1, 4, 2, 3))
    last(x)
    first(x_first)
    _randomise(last, rng)
    first.set_weights(last.get_weights())
    states = [rng.standard_normal((2, 5, 6, n)).astype("float32") for n in (3, 2)]
    out_last = last(x, initial_state=states)
    out_first = first(
        x_first, initial_state=[np.transpose(s, (0, 3, 1, 2)) for s in states]
    )
    for a, b in zip(out_last, out_first):
        np.testing.assert_allclose(a, np.transpose(b, (0, 2, 3, 1)), atol=1e-6)
    assert first.compute_output_shape(x_first.shape)[0] == (2, 3, 5, 6)


def test_dropout_only_in_training(rng):
    x = rng.standard_normal((2, 3, 5, 5, 2)).astype("float32")
    plain = ConvFeedback2D(3, 3, padding="same", feedback_filters=2)
    dropped = ConvFeedback2D(
        3,
        3,
        padding="same",
        feedback_filters=2,
        dropout=0.5,
        recurrent_dropout=0.5,
        seed=1,
    )
    plain(x)
    dropped(x)
    dropped.set_weights(plain.get_weights())
    np.testing.assert_allclose(dropped(x, training=False), plain(x), atol=1e-7)
    assert _max_error(dropped(x, training=True), plain(x)) > 1e-3


def test_feedback_and_feedforward_weights():
    layer = ConvFeedback2D(3, 3, feedback_filters=2, attention=True, output_filters=2)
    layer(np.zeros((1, 2, 5, 5, 1), "float32"))
    feedback = {v.name for v in layer.feedback_weights}
    assert feedback == {
        "feedback_recurrent_kernel",
        "feedback_kernel",
        "feedback_bias",
        "attention_kernel",
        "attention_bias",
    }
    assert {v.name for v in layer.feedforward_weights} == {
        "kernel",
        "recurrent_kernel",
        "bias",
        "output_kernel",
        "output_bias",
    }


def test_config_round_trip_and_saving(rng, tmp_path):
    inputs = keras.Input((3, 6, 6, 1))
    layer = ConvFeedback2D(
        2,
        3,
        strides=2,
        feedback_filters=1,
        core="lstm",
        attention=True,
        activation=keras_feedback.activations.PReLU(),
        name="conv_feedback",
    )
    model = keras.Model(inputs, keras.layers.Flatten()(layer(inputs)))
    x = rng.standard_normal((2, 3, 6, 6, 1)).astype("float32")
    clone = ConvFeedback2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


@pytest.mark.parametrize("engine", ["reference", "auto"])
def test_export_saved_model_and_litert(rng, tmp_path, engine):
    inputs = keras.Input((None, 6, 6, 1))
    h = ConvFeedback2D(2, 3, padding="same", feedback_filters=1, engine=engine)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    x = rng.standard_normal((2, 4, 6, 6, 1)).astype("float32")
    path = keras_feedback.export.export_saved_model(model, tmp_path / "sm")
    served = tf.saved_model.load(path).signatures["serving_default"]
    assert _max_error(served(x=tf.constant(x))["y"], model(x)) < 1e-5
    tflite = keras_feedback.export.export_litert(model, tmp_path / "m.tflite")
    assert "WHILE" in keras_feedback.export.litert_ops(tflite)
    assert "CONV_2D" in keras_feedback.export.litert_ops(tflite)
    report = keras_feedback.export.verify_litert(model, tflite, x)
    print(
        f"ConvFeedback2D ({engine}) LiteRT: max abs error "
        f"{report['max_abs_error']:.2e}, {report['size_bytes']} bytes"
    )
    assert report["max_abs_error"] < 1e-5


def test_export_streams_step_by_step(rng, tmp_path):
    """The SavedModel ``step`` signature and the LiteRT streaming model of a
    ConvFeedback2D model reproduce its sequence output."""
    inputs = keras.Input((None, 5, 5, 1))
    h = ConvFeedback2D(
        2, 3, padding="same", feedback_filters=1, core="lstm", return_sequences=True
    )(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    x = rng.standard_normal((2, 4, 5, 5, 1)).astype("float32")
    expected = np.asarray(model(x))
    path = keras_feedback.export.export_saved_model(model, tmp_path / "sm")
    loaded = tf.saved_model.load(path)
    states = loaded.signatures["initial_state"](batch_size=tf.constant(2))
    assert {k: tuple(v.shape) for k, v in states.items()} == {
        k: (2, 5, 5, n)
        for k, n in zip(sorted(states), (1, 2, 2))  # c, carry, h (sorted names)
    }
    step = loaded.signatures["step"]
    for t in range(4):
        result = step(x=tf.constant(x[:, t]), **states)
        assert _max_error(result["y"], expected[:, t]) < 1e-5
        states = {k: result[k] for k in states}
    tflite = keras_feedback.export.export_litert(
        model, tmp_path / "s.tflite", streaming=True
    )
    report = keras_feedback.export.verify_litert(model, tflite, x)
    assert report["max_abs_error"] < 1e-5


def test_stateful_chunks_equal_one_call(rng):
    x = rng.standard_normal((2, 6, 4, 4, 1)).astype("float32")
    whole = ConvFeedback2D(
        2, 3, padding="same", feedback_filters=1, return_sequences=True
    )
    chunked = ConvFeedback2D(
        2, 3, padding="same", feedback_filters=1, return_sequences=True, stateful=True
    )
    expected = whole(x)
    chunked(x[:, :2])
    chunked.set_weights(whole.get_weights())
    chunked.reset_state()
    parts = [chunked(x[:, i : i + 2]) for i in (0, 2, 4)]
    assert _max_error(np.concatenate(parts, 1), expected) < 1e-5
    with pytest.raises(ValueError, match="built for batch size 2 .* batch size 1"):
        chunked(x[:1, :2])


def test_export_traces_with_the_reference_engine():
    from keras_feedback import engine
    from keras_feedback.export import _common

    layer = ConvFeedback2D(2, 3, padding="same", feedback_filters=1, engine="xla")
    model = keras.Sequential([keras.Input((None, 6, 6, 1)), layer])
    with _common.export_mode(model):
        assert engine.resolve(layer.engine) == "reference"
    assert engine.resolve(layer.engine) == "xla"
    assert layer.engine == "xla"  # the layer is never mutated
    with _common.export_mode(model, engine=False):
        assert engine.resolve(layer.engine) == "xla"


# --- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(filters=0), "`filters`"),
        (dict(kernel_size=(3,)), "`kernel_size`"),
        (dict(strides=0), "`strides`"),
        (dict(padding="full"), "`padding`"),
        (dict(data_format="nhwc"), "`data_format`"),
        (dict(core="rnn"), "`core`"),
        (dict(feedback_filters=-1), "`feedback_filters`"),
        (dict(engine="fast"), "`engine`"),
        (dict(strides=2, dilation_rate=2), "`strides` and `dilation_rate`"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"filters": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        ConvFeedback2D(**args)


def test_bad_shapes():
    with pytest.raises(ValueError, match="static height"):
        ConvFeedback2D(2, 3)(keras.Input((4, None, 5, 1)))
    with pytest.raises(ValueError, match="no output pixels"):
        ConvFeedback2D(2, 5)(np.zeros((1, 2, 3, 3, 1), "float32"))
    layer = ConvFeedback2D(2, 3, padding="same", feedback_filters=1)
    with pytest.raises(ValueError, match=r"initial_state`\[1\] \(c\) must have shape"):
        layer(
            np.zeros((1, 2, 4, 4, 1), "float32"),
            initial_state=[np.zeros((1, 4, 4, 2)), np.zeros((1, 4, 4, 2))],
        )


class TestKerasConformance(LayerTestCase):
    def test_conv_feedback_layer(self):
        for kwargs, shape in [
            (dict(filters=2, kernel_size=3, padding="same"), (2, 5, 5, 2)),
            (
                dict(
                    filters=2,
                    kernel_size=3,
                    core="lstm",
                    attention=True,
                    output_filters=3,
                    return_sequences=True,
                    engine="reference",
                ),
                (2, 3, 3, 3, 3),
            ),
        ]:
            with self.subTest(str(kwargs)):
                self.check_recurrent_layer(
                    ConvFeedback2D, kwargs, (2, 3, 5, 5, 1), shape
                )
