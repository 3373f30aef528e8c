"""Export of models beyond Input -> Feedback -> Dense: stacked, bidirectional,
masked, Sequential, nested with several outputs, stateful (exported from
their current states), and models with
layers that cannot be streamed or converted.

These models run the default engine, so every check also compares the
exported reference-engine graph with the engine the layers use in Keras.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_feedback import export
from keras_feedback.export import _trace
from keras_feedback.layers import Feedback

TOLERANCE = 1e-5


def padded(rng, batch=5, steps=9, features=3):
    """Sequences whose rows 1 and 3 end early (zeros after), plus the mask."""
    x = rng.normal(size=(batch, steps, features)).astype("float32")
    mask = np.ones((batch, steps), bool)
    mask[1, 6:] = False
    mask[3, 2:] = False
    x[~mask] = 0.0
    return x, mask


def check_exports(model, inputs, tmp_path, streamable=True):
    """Exports both ways, reloads, and checks every export against Keras."""
    path = export.export_saved_model(model, tmp_path / "saved")
    report = export.verify_saved_model(model, tmp_path / "saved", inputs)
    assert report["serving_max_abs_error"] <= TOLERANCE, report
    expected = (
        ["initial_state", "serving_default", "step"]
        if streamable
        else ["serving_default"]
    )
    assert report["signatures"] == expected
    if streamable:
        assert report["step_max_abs_error"] <= TOLERANCE, report
    lite = export.export_litert(model, tmp_path / "model.tflite")
    report = export.verify_litert(model, lite, inputs)
    assert report["max_abs_error"] <= TOLERANCE, report
    if streamable:
        step = export.export_litert(model, tmp_path / "step.tflite", streaming=True)
        report = export.verify_litert(model, step, inputs)
        assert report["streaming"]
        assert report["max_abs_error"] <= TOLERANCE, report
    return path


def test_stacked(tmp_path, rng):
    inputs = keras.Input((None, 3))
    h = Feedback(4, core="lstm", residual=True, return_sequences=True)(inputs)
    h = Feedback(3, core="gru", attention=True, output_units=2)(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    check_exports(model, rng.normal(size=(5, 9, 3)).astype("float32"), tmp_path)


def test_bidirectional_exports_whole_sequences_only(tmp_path, rng):
    inputs = keras.Input((None, 3))
    h = keras.layers.Bidirectional(
        Feedback(4, core="gru", return_sequences=True), name="both_ways"
    )(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    x = rng.normal(size=(5, 9, 3)).astype("float32")
    with pytest.warns(UserWarning, match="Bidirectional 'both_ways'"):
        check_exports(model, x, tmp_path, streamable=False)
    with pytest.raises(ValueError, match="streaming.*Bidirectional 'both_ways'"):
        export.export_litert(model, tmp_path / "step.tflite", streaming=True)
    assert not (tmp_path / "step.tflite").exists()


def test_masking_layer(tmp_path, rng):
    inputs = keras.Input((None, 3))
    h = keras.layers.Masking(0.0)(inputs)
    h = Feedback(4, core="lstm", output_units=3, return_sequences=True, name="a")(h)
    h = Feedback(
        3, core="simple", return_sequences=True, zero_output_for_mask=True, name="b"
    )(h)
    head = keras.layers.Dense(2, bias_initializer="ones")
    model = keras.Model(inputs, head(h))
    x, mask = padded(rng)
    # The mask is in effect: `b` outputs zeros on padded steps, so the head
    # outputs its bias there.
    np.testing.assert_array_equal(np.asarray(model(x))[~mask], 1.0)
    check_exports(model, x, tmp_path)
    # A masked step repeats the previous output: layer `a` carries it as a
    # state; layer `b` outputs zeros and needs none.
    states = _trace.ExportPlan(model).state_specs
    assert list(states) == ["a_h", "a_carry", "a_c", "a_output", "b_h", "b_c"]
    # int8 over whole masked sequences (the masks select states in int8
    # models too; the bound is test_export_matrix.py's for int8).
    calibration, _ = padded(rng, batch=16)
    lite = export.export_litert(
        model,
        tmp_path / "int8.tflite",
        quantization="int8",
        representative_data=calibration,
    )
    report = export.verify_litert(model, lite, x)
    assert 0 < report["max_rel_error"] <= 0.35, report
    assert {"WHILE", "SELECT_V2"} <= set(report["ops"])


def test_mask_input(tmp_path, rng):
    features = keras.Input((None, 3), name="features")
    mask = keras.Input((None,), dtype="bool", name="mask")
    h = Feedback(4, core="gru", attention=True, return_sequences=True, name="fb")(
        features, mask=mask
    )
    model = keras.Model([features, mask], keras.layers.Dense(2)(h))
    x, m = padded(rng)
    m[2, 4] = False  # a gap in the middle of a sequence
    check_exports(model, {"features": x, "mask": m}, tmp_path)
    loaded = tf.saved_model.load(str(tmp_path / "saved" / "1"))
    step = loaded.signatures["step"].structured_input_signature[1]
    assert sorted(step) == ["fb_c", "fb_h", "fb_output", "features", "mask"]
    assert step["mask"].shape.as_list() == [None]
    calibration, calibration_mask = padded(rng, batch=16)
    lite = export.export_litert(
        model,
        tmp_path / "int8.tflite",
        quantization="int8",
        representative_data={"features": calibration, "mask": calibration_mask},
    )
    report = export.verify_litert(model, lite, {"features": x, "mask": m})
    assert 0 < report["max_rel_error"] <= 0.35, report


def test_sequential(tmp_path, rng):
    model = keras.Sequential(
        [
            keras.Input((None, 3)),
            Feedback(5, core="simple", residual=True, return_sequences=True),
            keras.layers.LayerNormalization(),
            keras.layers.Dense(4, activation="relu"),
            Feedback(3, core="lstm"),
            keras.layers.Dense(2),
        ]
    )
    check_exports(model, rng.normal(size=(5, 9, 3)).astype("float32"), tmp_path)


def test_nested_model_with_two_outputs(tmp_path, rng):
    inner = keras.Sequential(
        [
            keras.Input((None, 4)),
            keras.layers.Dense(3, activation="tanh"),
            keras.layers.Dense(2),
        ],
        name="inner",
    )
    inputs = keras.Input((None, 3))
    h = Feedback(4, core="gru", return_sequences=True, name="fb")(inputs)
    per_step = keras.layers.Add(name="per_step")([inner(h), keras.layers.Dense(2)(h)])
    summary = keras.layers.Dense(1, name="summary")(Feedback(2, name="last")(h))
    model = keras.Model(inputs, [per_step, summary])
    check_exports(model, rng.normal(size=(5, 9, 3)).astype("float32"), tmp_path)
    plan = _trace.ExportPlan(model)
    assert plan.output_names == ["per_step", "summary"]


def stateful_model(rows, rng):
    """``Input -> stateful Feedback (lstm) -> Dense`` for a batch of ``rows``,
    its states set to random values."""
    inputs = keras.Input(batch_shape=(rows, None, 3))
    layer = Feedback(4, core="lstm", stateful=True, return_sequences=True, name="fb")
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
    states = [rng.normal(size=(rows, n)).astype("float32") for n in layer.state_size]
    layer.reset_state(states)
    return model, layer, states


def stream(signatures, x):
    """``step`` over the time axis of ``x`` from ``initial_state``."""
    states = signatures["initial_state"](batch_size=tf.constant(x.shape[0]))
    outputs = []
    for t in range(x.shape[1]):
        result = signatures["step"](x=tf.constant(x[:, t]), **states)
        states = {name: result[name] for name in states}
        outputs.append(result["y"].numpy())
    return np.stack(outputs, axis=1)


def test_stateful_layer_starts_from_its_states(tmp_path, rng):
    """A stateful layer is exported stateless from a snapshot of its current
    states: serving_default gives the Keras model's next call, initial_state
    returns those states, and step from them reproduces serving_default."""
    model, layer, states = stateful_model(2, rng)
    x = rng.normal(size=(2, 6, 3)).astype("float32")
    expected = np.asarray(model(x))  # Keras's next call, from `states`
    layer.reset_state(states)
    path = check_exports(model, x, tmp_path)
    signatures = tf.saved_model.load(path).signatures
    served = signatures["serving_default"](x=tf.constant(x))["y"].numpy()
    np.testing.assert_allclose(served, expected, rtol=0, atol=TOLERANCE)
    start = signatures["initial_state"](batch_size=tf.constant(2))
    assert sorted(start) == ["fb_c", "fb_carry", "fb_h"]
    for name, value in zip(["fb_h", "fb_carry", "fb_c"], states):
        np.testing.assert_array_equal(start[name].numpy(), value)
    np.testing.assert_allclose(stream(signatures, x), served, rtol=0, atol=TOLERANCE)
    # (the graph's error message escapes the quotes around the layer name)
    message = "fb.* starts from the states of its stateful batch of 2 rows"
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        signatures["initial_state"](batch_size=tf.constant(3))
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        signatures["serving_default"](x=tf.zeros((3, 4, 3)))
    assert layer.stateful
    for variable, value in zip(layer.states, states):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_stateful_layer_of_batch_one_starts_every_row_from_its_states(tmp_path, rng):
    model, layer, states = stateful_model(1, rng)
    x = rng.normal(size=(3, 5, 3)).astype("float32")
    expected = []
    for row in x:
        layer.reset_state(states)
        expected.append(np.asarray(model(row[None]))[0])
    layer.reset_state(states)
    path = export.export_saved_model(model, tmp_path / "saved")
    signatures = tf.saved_model.load(path).signatures
    served = signatures["serving_default"](x=tf.constant(x))["y"].numpy()
    np.testing.assert_allclose(served, expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(stream(signatures, x), served, rtol=0, atol=TOLERANCE)
    lite = export.export_litert(model, tmp_path / "step.tflite", streaming=True)
    report = export.verify_litert(model, lite, x)
    assert report["max_abs_error"] <= TOLERANCE, report


def test_keras_recurrent_layer(tmp_path, rng):
    """Keras's own LSTM: served whole, no step signature (the warning names
    it), and no LiteRT file: its TensorList ops need Flex."""
    inputs = keras.Input((None, 3))
    h = keras.layers.LSTM(4, return_sequences=True, name="keras_lstm")(inputs)
    h = Feedback(3, return_sequences=True)(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    with pytest.warns(UserWarning, match="LSTM 'keras_lstm'"):
        export.export_saved_model(model, tmp_path / "saved")
    report = export.verify_saved_model(
        model, tmp_path / "saved", rng.normal(size=(2, 5, 3)).astype("float32")
    )
    assert report["serving_max_abs_error"] <= TOLERANCE
    assert report["signatures"] == ["serving_default"]
    before = sorted(os.listdir(tmp_path))
    message = r"TensorListReserve \(from LSTM 'keras_lstm'\)"
    with pytest.raises(ValueError, match=message):
        export.export_litert(model, tmp_path / "model.tflite")
    assert sorted(os.listdir(tmp_path)) == before


def test_layer_that_mixes_time_steps(tmp_path, rng):
    inputs = keras.Input((None, 3))
    h = Feedback(4, return_sequences=True)(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling1D(name="pool")(h))
    with pytest.warns(UserWarning, match="GlobalAveragePooling1D 'pool'"):
        check_exports(
            model, rng.normal(size=(5, 9, 3)).astype("float32"), tmp_path, False
        )
