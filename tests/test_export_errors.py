"""Bad input to the exporters: clear errors, and nothing half written."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from keras_feedback import export
from keras_feedback.layers import Feedback


def small_model(units=4, core="gru"):
    inputs = keras.Input((None, 3))
    h = Feedback(units, core=core, return_sequences=True, name="feedback")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(h))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    keras.utils.set_random_seed(0)
    model = small_model()
    export.export_saved_model(model, root / "saved")
    export.export_litert(model, root / "step.tflite", streaming=True)
    return model, root


@pytest.mark.parametrize("exporter", ["saved_model", "litert"])
def test_unbuilt_model(tmp_path, exporter):
    model = keras.Sequential([Feedback(4), keras.layers.Dense(2)], name="unbuilt")
    with pytest.raises(ValueError, match="`model` must be built.*'unbuilt'"):
        if exporter == "saved_model":
            export.export_saved_model(model, tmp_path / "saved")
        else:
            export.export_litert(model, tmp_path / "model.tflite")
    assert os.listdir(tmp_path) == []


def test_not_a_model(tmp_path):
    with pytest.raises(TypeError, match="`model` must be a keras.Model, got Feedback"):
        export.export_saved_model(Feedback(4), tmp_path / "saved")


def test_subclassed_model_without_symbolic_inputs(tmp_path):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.rnn = Feedback(4)

        def call(self, x):
            return self.rnn(x)

    model = Subclassed()
    model(np.zeros((1, 2, 3), "float32"))
    with pytest.raises(ValueError, match="functional or Sequential.*'subclassed'"):
        export.export_litert(model, tmp_path / "model.tflite")


def test_existing_saved_model_is_refused_unless_overwrite(tmp_path, rng):
    keras.utils.set_random_seed(1)
    model = small_model()
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    path = export.export_saved_model(model, tmp_path, version=3)
    assert path == str(tmp_path / "3")
    message = r"`directory`: .*3' already exists.*overwrite=True"
    with pytest.raises(ValueError, match=message):
        export.export_saved_model(model, tmp_path, version=3)
    # Another version next to it is fine (TF Serving's layout).
    export.export_saved_model(model, tmp_path, version=4)
    # overwrite=True replaces the version with the current weights.
    model.set_weights([w + 0.5 for w in model.get_weights()])
    export.export_saved_model(model, tmp_path, version=3, overwrite=True)
    served = tf.saved_model.load(path).signatures["serving_default"](x=tf.constant(x))
    np.testing.assert_allclose(served["y"], model(x), atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["3", "4"]  # no staging folder left


def test_existing_litert_file_is_refused_unless_overwrite(tmp_path):
    model = small_model()
    path = tmp_path / "model.tflite"
    path.write_bytes(b"keep me")
    with pytest.raises(ValueError, match="`path`: .*model.tflite' already exists"):
        export.export_litert(model, path)
    assert path.read_bytes() == b"keep me"
    export.export_litert(model, path, overwrite=True)
    assert "WHILE" in export.litert_ops(path)
    assert sorted(os.listdir(tmp_path)) == ["model.tflite"]


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, True])
def test_bad_version(tmp_path, version):
    message = f"`version` must be a positive integer.*got {version!r}"
    with pytest.raises(ValueError, match=message):
        export.export_saved_model(small_model(), tmp_path, version=version)


def test_quantization_arguments(tmp_path, rng):
    model = small_model()
    path = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match="`quantization` must be None or.*'int4'"):
        export.export_litert(model, path, quantization="int4")
    for streaming in (False, True):
        with pytest.raises(
            ValueError, match="`representative_data` is required.*got None"
        ):
            export.export_litert(model, path, quantization="int8", streaming=streaming)
    message = (
        r"`representative_data`: input 'x' must have shape \(None, None, 3\), "
        r"got \(2, 4, 5\)"
    )
    for streaming in (False, True):
        with pytest.raises(ValueError, match=message):
            export.export_litert(
                model,
                path,
                quantization="int8",
                streaming=streaming,
                representative_data=rng.normal(size=(2, 4, 5)),
            )
    assert not path.exists()


def test_wrong_state_shape_fed_to_saved_model_step(exported):
    model, root = exported
    step = tf.saved_model.load(str(root / "saved" / "1")).signatures["step"]
    x = tf.zeros((2, 3))
    good = {"feedback_h": tf.zeros((2, 4)), "feedback_c": tf.zeros((2, 4))}
    out = step(x=x, **good)
    expected = np.asarray(model(np.zeros((2, 1, 3))))[:, 0]
    np.testing.assert_allclose(out["y"], expected, atol=1e-6)
    message = (
        r"step: input feedback_h must have shape \(batch, 4\), with the batch "
        r"size of input x"
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        step(x=x, **dict(good, feedback_h=tf.zeros((2, 5))))
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        step(x=x, **dict(good, feedback_h=tf.zeros((3, 4))))
    message = r"input x must have shape \(batch, 3\)"
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        step(x=tf.zeros((2, 2)), **good)


def test_wrong_rank_state_fed_to_saved_model_step(exported):
    _, root = exported
    step = tf.saved_model.load(str(root / "saved" / "1")).signatures["step"]
    message = (
        r"step: input feedback_h must have shape \(batch, 4\), with the batch "
        r"size of input x; got shape.*\[2 4 1\]"
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        step(
            x=tf.zeros((2, 3)),
            feedback_h=tf.zeros((2, 4, 1)),
            feedback_c=tf.zeros((2, 4)),
        )


def test_serving_default_checks_shapes_and_serves_empty_batches(exported):
    model, root = exported
    serve = tf.saved_model.load(str(root / "saved" / "1")).signatures["serving_default"]
    message = (
        r"serving_default: input x must have shape \(batch, any, 3\), with the "
        r"batch size of input x; got shape.*\[2 5 4\]"
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(x=tf.zeros((2, 5, 4)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"got shape.*\[2 3\]"):
        serve(x=tf.zeros((2, 3)))
    assert serve(x=tf.zeros((0, 5, 3)))["y"].shape == (0, 5, 2)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    np.testing.assert_allclose(
        serve(x=tf.constant(x))["y"], np.asarray(model(x)), atol=1e-5
    )


@pytest.mark.parametrize("quantization", ["int8", "int16x8"])
def test_calibration_data_without_steps_or_values(tmp_path, quantization):
    model = small_model()
    path = tmp_path / "model.tflite"
    nan = np.full((2, 4, 3), np.nan, "float32")
    for data, message in (
        (np.zeros((2, 0, 3)), r"input 'x' has shape \(2, 0, 3\).*no time step"),
        (np.zeros((0, 4, 3)), r"input 'x' has shape \(0, 4, 3\).*no time step"),
        (nan, r"input 'x' \(shape \(2, 4, 3\)\) holds NaN or infinite values"),
    ):
        with pytest.raises(ValueError, match="`representative_data`: " + message):
            export.export_litert(
                model,
                path,
                quantization=quantization,
                streaming=True,
                representative_data=data,
            )
    with pytest.raises(
        ValueError, match=r"expected shape \(batch >= 1, time >= 1, \.\.\.\)"
    ):
        export.export_litert(
            model,
            path,
            quantization=quantization,
            streaming=True,
            representative_data=np.zeros((2, 0, 3)),
        )
    assert not path.exists()


def test_int16x8_whole_sequences_need_a_fixed_time_axis(tmp_path):
    with pytest.raises(
        ValueError, match=r"'int16x8' for whole sequences needs a fixed time axis"
    ):
        export.export_litert(
            small_model(),
            tmp_path / "model.tflite",
            quantization="int16x8",
            representative_data=np.zeros((2, 4, 3)),
        )
    assert os.listdir(tmp_path) == []


def test_wrong_state_shape_fed_to_litert_step(exported):
    _, root = exported
    interpreter = Interpreter(model_path=str(root / "step.tflite"))
    runner = interpreter.get_signature_runner("step")
    state = runner.get_input_details()["feedback_h"]
    assert list(state["shape_signature"]) == [-1, 4]
    x = np.zeros((2, 3), "float32")
    good = {name: np.zeros((2, 4), "float32") for name in ("feedback_h", "feedback_c")}
    assert runner(x=x, **good)["y"].shape == (2, 2)
    interpreter = Interpreter(model_path=str(root / "step.tflite"))
    detail = interpreter.get_signature_runner("step").get_input_details()["feedback_h"]
    interpreter.allocate_tensors()
    with pytest.raises(ValueError, match="Dimension mismatch"):
        interpreter.set_tensor(detail["index"], np.zeros((1, 5), "float32"))


def test_verify_arguments(exported, tmp_path):
    model, root = exported
    message = r"`inputs`: input 'x' must have shape \(None, None, 3\), got \(2, 5\)"
    with pytest.raises(ValueError, match=message):
        export.verify_saved_model(model, root / "saved", np.zeros((2, 5)))
    with pytest.raises(ValueError, match="no SavedModel version folder .*7"):
        export.verify_saved_model(model, root / "saved", np.zeros((1, 2, 3)), version=7)
    with pytest.raises(ValueError, match="no LiteRT file at"):
        export.verify_litert(model, tmp_path / "missing.tflite", np.zeros((1, 2, 3)))
