"""Export of models beyond Input -> Feedback -> Dense: stacked, bidirectional,
masked, Sequential, nested with several outputs, stateful, and models with
layers that cannot be streamed or converted.

These models run the default engine, so every check also compares the
exported reference-engine graph with the engine the layers use in Keras.
"""

import os

import keras
import numpy as np
import pytest

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
    expected = ["initial_state", "serving_default", "step"] if streamable else [
        "serving_default"
    ]
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
    loaded = __import__("tensorflow").saved_model.load(str(tmp_path / "saved" / "1"))
    step = loaded.signatures["step"].structured_input_signature[1]
    assert sorted(step) == ["fb_c", "fb_h", "fb_output", "features", "mask"]
    assert step["mask"].shape.as_list() == [None]


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
        [keras.Input((None, 4)), keras.layers.Dense(3, activation="tanh"),
         keras.layers.Dense(2)],
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


def test_stateful_layer_exports_stateless(tmp_path, rng):
    inputs = keras.Input(batch_shape=(2, None, 3))
    layer = Feedback(4, core="lstm", stateful=True, return_sequences=True)
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
    states = [rng.normal(size=(2, n)).astype("float32") for n in layer.state_size]
    layer.reset_state(states)
    check_exports(model, rng.normal(size=(2, 6, 3)).astype("float32"), tmp_path)
    assert layer.stateful
    for variable, value in zip(layer.states, states):
        np.testing.assert_array_equal(variable.numpy(), value)


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
