"""FeedbackLoop: the plain block at one iteration, a hand-written loop,
finite differences, XLA, saving, export, and clear errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import LayerTestCase

import keras_feedback

FeedbackLoop = keras_feedback.layers.FeedbackLoop


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _conv_block(in_channels, filters=4, name="block"):
    inputs = keras.Input((6, 6, in_channels))
    h = keras.layers.Conv2D(
        filters, 3, padding="same", activation="tanh", name="features"
    )(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(pooled), name=name)


def _manual_loop(block, x, iterations, feedback, gate=None, fed_fn=None):
    """The loop written out: numpy for the combination, the block as given."""
    x = np.asarray(x, "float64")
    fed = None
    outputs = []
    for _ in range(iterations):
        if feedback == "concat":
            extra = np.zeros(x.shape[:-1] + (block.inputs[0].shape[-1] - x.shape[-1],))
            block_input = np.concatenate([x, extra if fed is None else fed], -1)
        elif fed is None:
            block_input = x
        elif feedback == "add":
            block_input = x + fed
        else:
            kernel, bias = gate
            g = _sigmoid(np.concatenate([x, fed], -1) @ kernel + bias)
            block_input = x + g * fed
        output = np.asarray(block(block_input.astype("float32")), "float64")
        outputs.append(output)
        fed = output if fed_fn is None else np.asarray(fed_fn(block_input), "float64")
    return np.stack(outputs, 1)


# --- one iteration == the block ----------------------------------------------


@pytest.mark.parametrize("feedback", ["add", "gate"])
def test_one_iteration_is_the_plain_block(rng, feedback):
    block = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(5, activation="tanh")]
    )
    loop = FeedbackLoop(block, 1, feedback=feedback)
    x = rng.standard_normal((4, 5)).astype("float32")
    np.testing.assert_array_equal(loop(x), block(x))


def test_one_iteration_concat_is_the_block_on_zero_feedback(rng):
    block = _conv_block(2 + 4)
    loop = FeedbackLoop(block, 1, feedback="concat", feedback_from="features")
    x = rng.standard_normal((2, 6, 6, 2)).astype("float32")
    zeros = np.zeros((2, 6, 6, 4), "float32")
    np.testing.assert_array_equal(loop(x), block(np.concatenate([x, zeros], -1)))


# --- K iterations == the loop written out ------------------------------------


@pytest.mark.parametrize("feedback", ["concat", "add", "gate"])
def test_iterations_equal_manual_loop(rng, feedback):
    block = keras.Sequential(
        [
            keras.Input((4 if feedback != "concat" else 8,)),
            keras.layers.Dense(4, activation="tanh"),
        ]
    )
    loop = FeedbackLoop(block, 3, feedback=feedback, return_iterations=True)
    x = rng.standard_normal((5, 4)).astype("float32")
    outputs = loop(x)
    gate = None
    if feedback == "gate":
        loop.gate_kernel.assign(rng.standard_normal((8, 4)).astype("float32"))
        loop.gate_bias.assign(rng.standard_normal(4).astype("float32"))
        outputs = loop(x)
        gate = (loop.gate_kernel.numpy(), loop.gate_bias.numpy())
    expected = _manual_loop(block, x, 3, feedback, gate)
    assert outputs.shape == (5, 3, 4)
    np.testing.assert_allclose(outputs, expected, atol=1e-6)
    # The iterations differ: something was fed back.
    assert np.max(np.abs(expected[:, 2] - expected[:, 0])) > 1e-3


def test_feedback_from_an_intermediate_layer(rng):
    block = _conv_block(1 + 4)
    loop = FeedbackLoop(
        block, 3, feedback="concat", feedback_from="features", return_iterations=True
    )
    x = rng.standard_normal((2, 6, 6, 1)).astype("float32")
    features = keras.Model(block.input, block.get_layer("features").output)
    expected = _manual_loop(block, x, 3, "concat", fed_fn=features)
    np.testing.assert_allclose(loop(x), expected, atol=1e-5)


def test_projection_makes_the_output_fit(rng):
    block = _conv_block(1)
    projection = keras.layers.Conv2D(1, 1, name="projection")
    loop = FeedbackLoop(
        block,
        2,
        feedback="add",
        feedback_from="features",
        projection=projection,
        return_iterations=True,
    )
    x = rng.standard_normal((2, 6, 6, 1)).astype("float32")
    features = keras.Model(block.input, block.get_layer("features").output)
    expected = _manual_loop(
        block, x, 2, "add", fed_fn=lambda b: projection(features(b))
    )
    np.testing.assert_allclose(loop(x), expected, atol=1e-5)
    assert {id(v) for v in loop.feedback_weights} == {id(v) for v in projection.weights}


def test_disabled_loop_repeats_the_first_iteration(rng):
    block = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(3, activation="tanh")]
    )
    loop = FeedbackLoop(block, 3, feedback="add", return_iterations=True)
    x = rng.standard_normal((2, 3)).astype("float32")
    loop.feedback_enabled = False
    outputs = np.asarray(loop(x))
    for k in range(3):
        np.testing.assert_array_equal(outputs[:, k], block(x))


# --- gradients through the iterations ----------------------------------------


@pytest.mark.parametrize("feedback", ["concat", "add", "gate"])
def test_gradients_match_finite_differences(feedback):
    keras.config.set_dtype_policy("float64")  # the fixture restores it
    rng = np.random.default_rng(7)
    width = 3 if feedback != "concat" else 6
    block = keras.Sequential(
        [
            keras.Input((width,), dtype="float64"),
            keras.layers.Dense(3, activation="tanh"),
        ]
    )
    loop = FeedbackLoop(block, 3, feedback=feedback)
    x = tf.constant(rng.standard_normal((2, 3)))
    loop(x)
    for variable in loop.weights:
        variable.assign(rng.standard_normal(variable.shape))

    def loss(x):
        return tf.reduce_sum(
            tf.sin(loop(x)) * tf.constant([1.0, -2.0, 0.5], tf.float64)
        )

    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(x)
    grads = tape.gradient(value, [x] + loop.trainable_weights)
    eps = 1e-6
    numeric_x = np.zeros(x.shape)
    for index in np.ndindex(*x.shape):
        delta = np.zeros(x.shape)
        delta[index] = eps
        numeric_x[index] = (float(loss(x + delta)) - float(loss(x - delta))) / (2 * eps)
    np.testing.assert_allclose(grads[0], numeric_x, rtol=1e-6, atol=1e-8)
    for variable, grad in zip(loop.trainable_weights, grads[1:]):
        base = variable.numpy()
        numeric = np.zeros(base.shape)
        for index in np.ndindex(*base.shape):
            for sign in (1, -1):
                shifted = base.copy()
                shifted[index] += sign * eps
                variable.assign(shifted)
                numeric[index] += sign * float(loss(x)) / (2 * eps)
        variable.assign(base)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


# --- XLA, saving, export -----------------------------------------------------


def _image_model(iterations=3, feedback="concat"):
    inputs = keras.Input((6, 6, 1))
    loop = FeedbackLoop(
        _conv_block(1 + 4 if feedback == "concat" else 1),
        iterations,
        feedback=feedback,
        feedback_from="features",
        projection=None if feedback == "concat" else keras.layers.Conv2D(1, 1),
        return_iterations=True,
        name="loop",
    )
    return keras.Model(inputs, loop(inputs))


def test_jit_compiled_model_matches_eager(rng):
    model = _image_model()
    x = rng.standard_normal((8, 6, 6, 1)).astype("float32")
    y = rng.integers(0, 3, 8)
    eager = np.asarray(model(x))
    model.compile(
        "adam",
        loss=keras_feedback.training.IterationLoss(
            keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        ),
        jit_compile=True,
    )
    assert model.jit_compile
    np.testing.assert_allclose(model.predict(x, verbose=0), eager, atol=1e-5)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=3, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before


@pytest.mark.parametrize("feedback", ["concat", "gate"])
def test_saving_round_trip(rng, tmp_path, feedback):
    model = _image_model(feedback=feedback)
    x = rng.standard_normal((2, 6, 6, 1)).astype("float32")
    path = str(tmp_path / "loop.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    loop = loaded.get_layer("loop")
    assert (loop.iterations, loop.feedback, loop.feedback_from) == (
        3,
        feedback,
        "features",
    )


def test_export_saved_model_and_litert(rng, tmp_path):
    model = _image_model(feedback="gate")
    x = rng.standard_normal((3, 6, 6, 1)).astype("float32")
    with pytest.warns(UserWarning, match="without the `step`"):
        path = keras_feedback.export.export_saved_model(model, tmp_path / "sm")
    served = tf.saved_model.load(path).signatures["serving_default"]
    error = float(np.max(np.abs(served(x=tf.constant(x))["y"] - model(x))))
    assert error < 1e-5
    tflite = keras_feedback.export.export_litert(model, tmp_path / "loop.tflite")
    report = keras_feedback.export.verify_litert(model, tflite, x)
    print(
        f"FeedbackLoop SavedModel error {error:.2e}, LiteRT error "
        f"{report['max_abs_error']:.2e}, {report['size_bytes']} bytes"
    )
    assert report["max_abs_error"] < 1e-5


# --- bad input ---------------------------------------------------------------


@pytest.mark.parametrize("iterations", [0, -2, 1.5, True, None])
def test_bad_iterations(iterations):
    with pytest.raises(
        ValueError, match=f"`iterations` must be a positive integer, got {iterations!r}"
    ):
        FeedbackLoop(keras.layers.Dense(2), iterations)


def test_unknown_feedback_mode():
    with pytest.raises(
        ValueError,
        match=r"`feedback` must be one of \('concat', 'add', 'gate'\), got 'multiply'",
    ):
        FeedbackLoop(keras.layers.Dense(2), 2, feedback="multiply")


def test_block_must_be_a_layer():
    with pytest.raises(TypeError, match="`block` must be a Keras layer"):
        FeedbackLoop(lambda x: x, 2)


def test_unknown_feedback_from():
    with pytest.raises(ValueError, match="`feedback_from`='missing' must name a layer"):
        FeedbackLoop(_conv_block(5), 2, feedback_from="missing")


@pytest.mark.parametrize(
    "feedback, block, shape",
    [
        (
            "add",
            keras.layers.Dense(3),
            r"input shape \(None, 5\) and fed-back shape \(None, 3\)",
        ),
        (
            "gate",
            keras.layers.Conv2D(2, 3),
            r"\(None, 6, 6, 1\) and fed-back shape \(None, 4, 4, 2\)",
        ),
        (
            "concat",
            keras.layers.Conv2D(2, 3),
            r"\(None, 6, 6, 1\) and fed-back shape \(None, 4, 4, 2\)",
        ),
    ],
)
def test_output_that_cannot_be_fed_back(feedback, block, shape):
    input_shape = (5,) if isinstance(block, keras.layers.Dense) else (6, 6, 1)
    loop = FeedbackLoop(block, 2, feedback=feedback)
    with pytest.raises(ValueError, match=shape) as error:
        loop(keras.Input(input_shape))
    assert "Pass `projection`" in str(error.value)


def test_concat_block_with_the_wrong_input_channels():
    # The block takes 3 channels: the input's 1 + 2 fed back, but it outputs 4.
    inputs = keras.Input((6, 6, 3))
    block = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same")(inputs))
    with pytest.raises(ValueError, match=r"fed-back shape \(None, 6, 6, 4\)"):
        FeedbackLoop(block, 2, feedback="concat")(keras.Input((6, 6, 1)))


class TestKerasConformance(LayerTestCase):
    def test_feedback_loop(self):
        for feedback in ("concat", "gate"):
            with self.subTest(feedback):
                self.run_layer_test(
                    FeedbackLoop,
                    init_kwargs={
                        "block": keras.layers.Dense(3, activation="tanh"),
                        "iterations": 2,
                        "feedback": feedback,
                        "return_iterations": True,
                    },
                    input_shape=(2, 3),
                    expected_output_shape=(2, 2, 3),
                    expected_num_trainable_weights=2 + 2 * (feedback == "gate"),
                )
