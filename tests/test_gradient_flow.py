"""GradientFlow: ‖∂L/∂h_t‖ per time step, step Jacobians, verdicts, CLI."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_feedback import cli
from keras_feedback.layers import Feedback
from keras_feedback.training import GradientFlow
from keras_feedback.training import _gradient_flow

STEPS = 16
GAIN = 1.5


def _model(time_steps=STEPS, **kwargs):
    model = keras.Sequential(
        [
            keras.Input((time_steps, 3)),
            Feedback(6, name="loop", **kwargs),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


def _exploding():
    return _model(
        core="simple",
        feedback_units=0,
        activation="linear",
        recurrent_initializer=keras.initializers.Orthogonal(gain=GAIN),
    )


def _vanishing():
    return _model(
        core="simple",
        feedback_units=0,
        activation="sigmoid",
        recurrent_initializer=keras.initializers.RandomNormal(stddev=0.3),
    )


def _batch(rng, n=8, time_steps=STEPS):
    x = rng.normal(size=(n, time_steps, 3)).astype("float32")
    y = rng.normal(size=(n, 1)).astype("float32")
    return x, y


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_exploding_configuration_grows_by_the_gain(rng, kind):
    model = _exploding()
    if kind == "functional":
        inputs = keras.Input((STEPS, 3))
        loop = Feedback.from_config(model.get_layer("loop").get_config())
        head = keras.layers.Dense(1, name="head")
        functional = keras.Model(inputs, head(loop(inputs)))
        functional.set_weights(model.get_weights())
        functional.compile("sgd", "mse")
        model = functional
    x, y = _batch(rng)
    report = GradientFlow.measure(model, x, y)
    norms = report.gradient_norms
    # h_{t+1} = x W + h_t U + b with U = GAIN * orthogonal: every step back
    # multiplies the gradient by U^T, whose every singular value is GAIN.
    np.testing.assert_allclose(norms[:-1] / norms[1:], GAIN, rtol=1e-4)
    np.testing.assert_allclose(report.jacobian_norms, GAIN, rtol=1e-5)
    np.testing.assert_allclose(report.ratio, GAIN ** (STEPS - 1), rtol=1e-3)
    np.testing.assert_allclose(report.rate, GAIN, rtol=1e-4)
    assert report.verdict == "exploding"
    # The last step: d mse / d h_T = 2 (y_pred - y) w^T / batch.
    y_pred = model.predict(x, verbose=0)
    w = model.get_layer("head").kernel.numpy()
    expected = np.linalg.norm(2.0 * (y_pred - y) @ w.T / len(x))
    np.testing.assert_allclose(norms[-1], expected, rtol=1e-5)


def test_vanishing_configuration_decays_with_bounded_jacobians(rng):
    model = _vanishing()
    x, y = _batch(rng)
    report = GradientFlow.measure(model, x, y)
    norms = report.gradient_norms
    assert np.all(norms[:-1] < norms[1:])  # decays back in time at every step
    assert report.verdict == "vanishing" and report.ratio < 1e-3
    # numpy: J_t = diag(s'(z_t)) U^T with s' = h (1 - h) for the sigmoid.
    cell = model.get_layer("loop").cell
    kernel, recurrent, bias = (v.numpy().astype("float64") for v in cell.weights)
    h = np.zeros((len(x), 6))
    expected = []
    for t in range(STEPS):
        h = 1.0 / (1.0 + np.exp(-(x[:, t] @ kernel + h @ recurrent + bias)))
        jac = (h * (1 - h))[:, :, None] * recurrent.T[None]
        expected.append(np.mean([np.linalg.norm(j, 2) for j in jac]))
    np.testing.assert_allclose(report.jacobian_norms, expected, rtol=1e-4)
    assert np.all(report.jacobian_norms <= 0.25 * np.linalg.norm(recurrent, 2))


def test_gradient_is_the_total_derivative_through_the_feedback_loop(rng):
    time_steps, k = 8, 3
    model = _model(time_steps, core="gru", feedback_units=3)
    x, y = _batch(rng, 4, time_steps)
    report = GradientFlow.measure(model, x, y, layer="loop", jacobian=False)
    assert report.jacobian_norms is None
    # Independently, with the layer itself (fused engine): run to step k,
    # then differentiate the rest of the sequence with respect to h_k, which
    # also reaches the loss through c_k = sigmoid(h_k W_c + b_c).
    layer = model.get_layer("loop")
    twin = Feedback(6, core="gru", feedback_units=3, return_state=True)
    twin(x)
    twin.set_weights(layer.get_weights())
    _, h_k, c_k = twin(x[:, : k + 1])
    cell = layer.cell
    with tf.GradientTape() as tape:
        tape.watch(h_k)
        c = tf.sigmoid(h_k @ cell.feedback_kernel + cell.feedback_bias)
        c = c + tf.stop_gradient(c_k - c)  # same value, gradient via h_k
        last = layer(x[:, k + 1 :], initial_state=[h_k, c])
        loss = keras.losses.MeanSquaredError()(y, model.get_layer("head")(last))
    expected = tf.norm(tape.gradient(loss, h_k)).numpy()
    np.testing.assert_allclose(report.gradient_norms[k], expected, rtol=1e-4)


def _events(log_dir):
    """The summaries in ``log_dir``, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return {
        tag: [
            (event.step, tf.make_ndarray(event.tensor_proto))
            for event in accumulator.Tensors(tag)
        ]
        for tag in accumulator.Tags()[event_accumulator.TENSORS]
    }, accumulator


def test_callback_records_logs_and_draws(rng, tmp_path):
    model = _vanishing()
    x, y = _batch(rng, 24)
    flow = GradientFlow(
        (x, y),
        every=4,
        max_examples=8,
        log_dir=str(tmp_path / "logs"),
        heatmap_path=str(tmp_path / "flow.png"),
    )
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[flow])
    assert flow.steps == [1, 5, 9]  # counted across epochs; 9 is the last batch
    assert flow.gradient_norms.shape == (3, STEPS)
    assert flow.jacobian_norms.shape == (3, STEPS)
    # The last record is the model as trained: measure it again directly.
    final = GradientFlow.measure(model, x[:8], y[:8])
    np.testing.assert_allclose(flow.gradient_norms[-1], final.gradient_norms, rtol=1e-5)
    assert flow.reports[0].verdict == "vanishing"
    with open(tmp_path / "flow.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    events, accumulator = _events(tmp_path / "logs")
    first = events["gradient_flow/first_step_norm"]
    assert [step for step, _ in first] == flow.steps
    plugin = accumulator.SummaryMetadata("gradient_flow/first_step_norm")
    assert plugin.plugin_data.plugin_name == "scalars"
    np.testing.assert_allclose(
        [value for _, value in first], flow.gradient_norms[:, 0], rtol=1e-6
    )
    step, image = events["gradient_flow/heatmap"][-1]
    assert step == flow.steps[-1]
    plugin = accumulator.SummaryMetadata("gradient_flow/heatmap")
    assert plugin.plugin_data.plugin_name == "images"
    assert image[2][:4] == b"\x89PNG"  # width, height, encoded PNG
    with open(tmp_path / "flow.png", "rb") as f:  # the same picture
        np.testing.assert_array_equal(
            tf.image.decode_png(image[2]), tf.image.decode_png(f.read())
        )


def test_keras_tensorboard_callback_logs_a_feedback_model(rng, tmp_path):
    model = _vanishing()
    x, y = _batch(rng, 16)
    board = keras.callbacks.TensorBoard(str(tmp_path / "board"))
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[board])
    events, _ = _events(tmp_path / "board" / "train")
    losses = events["epoch_loss"]
    assert [step for step, _ in losses] == [0, 1]
    np.testing.assert_allclose(
        [float(value) for _, value in losses], history.history["loss"], rtol=1e-6
    )


def test_diagnose_command_prints_the_verdict(rng, tmp_path, capsys):
    x, y = _batch(rng)
    data = tmp_path / "batch.npz"
    np.savez(data, x=x, y=y)
    for make, verdict in ((_exploding, "exploding"), (_vanishing, "vanishing")):
        model = make()
        path = tmp_path / f"{verdict}.keras"
        model.save(path)
        figures = tmp_path / f"{verdict}.json"
        code = cli.main(
            ["diagnose", str(path), "--data", str(data), "--json", str(figures)]
        )
        out = capsys.readouterr().out
        assert code == 0, out
        assert f"verdict: {verdict}" in out
        with open(figures) as f:
            saved = json.load(f)
        expected = GradientFlow.measure(model, x, y)
        np.testing.assert_allclose(
            saved["gradient_norms"], expected.gradient_norms, rtol=1e-5
        )
        assert saved["verdict"] == verdict
    code = cli.main(["diagnose", str(tmp_path / "missing.keras"), "--data", str(data)])
    assert code == 2 and "model: no file at" in capsys.readouterr().err


def test_bad_input(rng):
    x, y = _batch(rng)
    with pytest.raises(ValueError, match="`every` must be a positive integer, got 0"):
        GradientFlow((x, y), every=0)
    with pytest.raises(ValueError, match="`data` must be \\(x, y\\) arrays"):
        GradientFlow(x)
    plain = keras.Sequential(
        [keras.Input((STEPS, 3)), keras.layers.GRU(4), keras.layers.Dense(1)]
    )
    plain.compile("sgd", "mse")
    with pytest.raises(ValueError, match="holds no keras_feedback.layers.Feedback"):
        GradientFlow.measure(plain, x, y)
    with pytest.raises(
        ValueError, match="no Feedback layer named 'nope'.*\\['loop'\\]"
    ):
        GradientFlow.measure(_exploding(), x, y, layer="nope")
    uncompiled = keras.Sequential(
        [keras.Input((STEPS, 3)), Feedback(4), keras.layers.Dense(1)]
    )
    with pytest.raises(ValueError, match="not compiled with a loss"):
        GradientFlow.measure(uncompiled, x, y)


def test_verdict_thresholds():
    assert _gradient_flow._verdict(np.array([1e-3, 1.0]))[2] == "vanishing"
    assert _gradient_flow._verdict(np.array([1e3, 1.0]))[2] == "exploding"
    assert _gradient_flow._verdict(np.array([0.5, 1.0]))[2] == "stable"
    assert _gradient_flow._verdict(np.array([np.inf, 1.0]))[2] == "exploding"
    ratio, rate, _ = _gradient_flow._verdict(np.array([8.0, 4.0, 2.0, 1.0]))
    assert ratio == 8.0 and rate == pytest.approx(2.0)


@pytest.mark.parametrize("core", ["gru", "lstm"])
def test_padded_batch_gives_each_example_its_own_figures(rng, core):
    """On a batch padded behind a ``Masking`` layer, each example's figures
    on its valid steps are those it gives run alone at its true length;
    padded steps are marked masked (NaN), not vanishing."""

    def model(time_steps):
        m = keras.Sequential(
            [
                keras.Input((time_steps, 3)),
                keras.layers.Masking(0.0),
                Feedback(5, feedback_units=2, core=core, name="loop"),
                keras.layers.Dense(1, name="head"),
            ]
        )
        m.compile("sgd", "mse")
        return m

    lengths = [6, 3, 5]
    padded = model(6)
    x = np.zeros((3, 6, 3), "float32")
    for i, n in enumerate(lengths):
        x[i, :n] = rng.normal(size=(n, 3)) + 0.1  # no exact zeros in real steps
    y = rng.normal(size=(3, 1)).astype("float32")
    report = GradientFlow.measure(padded, x, y)
    assert report.mask.tolist() == [[t < n for t in range(6)] for n in lengths]
    assert np.isnan(report.example_gradient_norms[1, 3:]).all()
    assert np.isfinite(report.gradient_norms).all()
    for i, n in enumerate(lengths):
        alone = model(n)
        alone.set_weights(padded.get_weights())
        single = GradientFlow.measure(alone, x[i : i + 1, :n], y[i : i + 1])
        np.testing.assert_allclose(
            report.example_gradient_norms[i, :n], single.gradient_norms, rtol=1e-5
        )
        np.testing.assert_allclose(
            report.example_gradient_norms[i, :n],
            single.example_gradient_norms[0],
            rtol=1e-5,
        )
