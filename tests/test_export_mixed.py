"""Models under a mixed precision policy export computing in float32, and
verify at a tolerance scaled to their compute dtype."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from keras_feedback import export
from keras_feedback.layers import Feedback


def stacked_model(policy):
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, 3))
    h = Feedback(4, core="gru", attention=True, return_sequences=True)(inputs)
    h = Feedback(5, core="lstm", residual=True, output_units=3, return_sequences=True)(
        h
    )
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    keras.config.set_dtype_policy("float32")
    return model


@pytest.mark.parametrize(
    "policy, tolerance",
    [("mixed_float16", 1e-2), ("mixed_bfloat16", 5e-2)],
)
def test_mixed_precision_exports_verify(tmp_path, policy, tolerance):
    model = stacked_model(policy)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    path = export.export_saved_model(model, tmp_path / "saved")
    report = export.verify_saved_model(model, tmp_path / "saved", x)
    assert report["tolerance"] == tolerance
    assert report["within_tolerance"], report
    # Keras's own half-precision rounding is what the tolerance allows for.
    assert 1e-4 < report["serving_max_rel_error"] <= tolerance, report
    assert report["step_max_rel_error"] <= tolerance, report
    served = tf.saved_model.load(path).signatures["serving_default"]
    assert served(x=tf.constant(x))["y"].dtype == tf.float32
    # The step model for one policy (it converts the same float32 copy).
    for streaming in (False, True) if policy == "mixed_float16" else (False,):
        lite = export.export_litert(
            model, tmp_path / f"m{streaming}.tflite", streaming=streaming
        )
        report = export.verify_litert(model, lite, x)
        assert report["tolerance"] == tolerance
        if not streaming:
            # Both files compute in float32: they agree with each other far
            # within the half-precision tolerance (this tells a LiteRT
            # runtime fault from Keras's own rounding when the next check
            # fails).
            interpreter = Interpreter(model_path=lite)
            run = interpreter.get_signature_runner("serving_default")
            np.testing.assert_allclose(
                run(x=x)["y"], served(x=tf.constant(x))["y"].numpy(), atol=1e-5
            )
        assert report["within_tolerance"], report
        assert not any("FLEX" in op for op in report["ops"])
    # The model was not changed: same policy, same weights.
    assert model.layers[1].compute_dtype == policy.removeprefix("mixed_")
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_saved_model_in_the_models_own_dtypes(tmp_path):
    model = stacked_model("mixed_float16")
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    path = export.export_saved_model(model, tmp_path, compute_dtype=None)
    served = tf.saved_model.load(path).signatures["serving_default"]
    y = served(x=tf.constant(x))["y"]
    assert y.dtype == tf.float16
    np.testing.assert_allclose(y.numpy(), np.asarray(model(x)), atol=1e-3)
    with pytest.raises(ValueError, match=r"`compute_dtype` must be one of .*'half'"):
        export.export_saved_model(model, tmp_path / "b", compute_dtype="half")


def test_float32_model_tolerance_and_bad_tolerance(tmp_path):
    model = stacked_model("float32")
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    lite = export.export_litert(model, tmp_path / "m.tflite")
    report = export.verify_litert(model, lite, x)
    assert report["tolerance"] == 1e-4 and report["within_tolerance"]
    report = export.verify_litert(model, lite, x, tolerance=0.0)
    assert report["tolerance"] == 0.0
    assert report["within_tolerance"] == (report["max_rel_error"] == 0.0)
    with pytest.raises(ValueError, match=r"`tolerance` must be a non-negative.*-1"):
        export.verify_litert(model, lite, x, tolerance=-1)
    with pytest.raises(TypeError, match=r"`tolerance` must be a number.*'big'"):
        export.verify_litert(model, lite, x, tolerance="big")
