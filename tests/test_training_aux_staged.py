"""Auxiliary losses over iterations and steps, staged training, the image task
and its example."""

import importlib.util
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_feedback
from keras_feedback.training._synthetic_images import CLASS_NAMES
from keras_feedback.training._synthetic_images import synthetic_images

training = keras_feedback.training
EXAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(__file__)),
    "examples",
    "iterative_feedback_images.py",
)


def _example():
    spec = importlib.util.spec_from_file_location("iterative_feedback_images", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# --- IterationLoss and IterationMetric against numpy -------------------------


def test_iteration_loss_classifier_equals_numpy(rng):
    logits = rng.standard_normal((6, 3, 4)).astype("float32")
    labels = rng.integers(0, 4, 6)
    sample_weight = rng.uniform(0.5, 1.5, 6).astype("float32")
    weights, aux, main = [0.2, 0.3, 0.5], 0.7, 1.3
    loss = training.IterationLoss(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weights=weights,
        aux_weight=aux,
        main_weight=main,
    )
    per_iteration = -np.take_along_axis(
        _log_softmax(logits.astype("float64")), labels[:, None, None], -1
    )[..., 0]  # (batch, iterations)
    per_sample = main * per_iteration[:, -1] + aux * per_iteration @ np.array(weights)
    expected = np.sum(per_sample * sample_weight) / 6
    value = loss(labels, logits, sample_weight=sample_weight)
    np.testing.assert_allclose(float(value), expected, rtol=1e-6)


def test_iteration_loss_per_step_targets_equals_numpy(rng):
    # A trace (batch, time, features...) with its own target at every step.
    y_pred = rng.standard_normal((4, 5, 3, 2)).astype("float32")
    y_true = rng.standard_normal((4, 5, 3, 2)).astype("float32")
    loss = training.IterationLoss(
        "mse", aux_weight=2.0, main_weight=0.0, shared_target=False
    )
    per_step = np.mean((y_pred - y_true) ** 2, -1)  # (batch, time, 3)
    expected = np.mean(2.0 * per_step.mean(1))
    np.testing.assert_allclose(float(loss(y_true, y_pred)), expected, rtol=1e-6)


def test_iteration_loss_with_unknown_iterations(rng):
    loss = training.IterationLoss("mse", main_weight=0.5)
    y_pred = rng.standard_normal((3, 4, 2)).astype("float32")
    y_true = rng.standard_normal((3, 2)).astype("float32")

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, 2), tf.float32),
            tf.TensorSpec((None, None, 2), tf.float32),
        ]
    )
    def value(y_true, y_pred):
        return loss(y_true, y_pred)

    per = np.mean((y_pred - y_true[:, None]) ** 2, -1)
    expected = np.mean(0.5 * per[:, -1] + per.mean(1))
    np.testing.assert_allclose(float(value(y_true, y_pred)), expected, rtol=1e-6)


def test_iteration_loss_config_round_trip(rng):
    loss = training.IterationLoss(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weights=[1.0, 2.0],
        aux_weight=0.25,
    )
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, training.IterationLoss)
    logits = rng.standard_normal((3, 2, 5)).astype("float32")
    labels = rng.integers(0, 5, 3)
    np.testing.assert_allclose(
        float(clone(labels, logits)), float(loss(labels, logits))
    )


def test_iteration_metric_equals_numpy(rng):
    logits = rng.standard_normal((20, 3, 4)).astype("float32")
    labels = rng.integers(0, 4, 20)
    for iteration in (0, 1, -1):
        metric = training.IterationMetric("sparse_categorical_accuracy", iteration)
        metric.update_state(labels, logits)
        expected = np.mean(np.argmax(logits[:, iteration], -1) == labels)
        np.testing.assert_allclose(float(metric.result()), expected)
    assert training.IterationMetric("mae", 1).name == "mean_absolute_error_2"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(loss="no_such_loss"), "`loss` must be a Keras loss"),
        (
            dict(loss="mse", weights=[0.5, -1.0]),
            r"`weights\[1\]` must be a non-negative",
        ),
        (dict(loss="mse", aux_weight=-0.1), "`aux_weight`"),
        (dict(loss="mse", weights=[]), "must not be empty"),
    ],
)
def test_iteration_loss_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        training.IterationLoss(**kwargs)


def test_iteration_loss_wrong_number_of_weights():
    loss = training.IterationLoss("mse", weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="has 2 entries, but the prediction has 3"):
        loss(np.zeros((2, 1)), np.zeros((2, 3, 1)))


# --- supervising a Feedback layer's trace from compile/fit -------------------


def test_trace_supervision_from_compile(rng):
    inputs = keras.Input((5, 3))
    sequence, trace = keras_feedback.layers.Feedback(
        4,
        feedback_units=2,
        return_sequences=True,
        return_trace=True,
        engine="reference",
    )(inputs)
    model = keras.Model(
        inputs, {"y": keras.layers.Dense(1)(sequence[:, -1]), "c": trace["c"]}
    )
    step_weights = [0.1, 0.1, 0.2, 0.2, 0.4]
    model.compile(
        "adam",
        loss={
            "y": "mse",
            "c": training.IterationLoss(
                "mse", weights=step_weights, main_weight=0.0, shared_target=False
            ),
        },
        loss_weights={"y": 1.0, "c": 0.3},
    )
    x = rng.standard_normal((16, 5, 3)).astype("float32")
    targets = {
        "y": rng.standard_normal((16, 1)).astype("float32"),
        "c": rng.uniform(0, 1, (16, 5, 2)).astype("float32"),
    }
    predicted = model.predict(x, verbose=0)
    c_loss = np.mean(
        np.mean((predicted["c"] - targets["c"]) ** 2, -1) @ np.array(step_weights)
    )
    expected = np.mean((predicted["y"] - targets["y"]) ** 2) + 0.3 * c_loss
    total = model.evaluate(x, targets, batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_allclose(total["loss"], expected, rtol=1e-5)
    model.fit(x, targets, epochs=20, batch_size=16, verbose=0)
    after = model.evaluate(x, targets, batch_size=16, verbose=0, return_dict=True)
    assert after["loss"] < total["loss"]


# --- the built-in image task -------------------------------------------------


def test_synthetic_images_are_seeded_and_balanced():
    x, y = synthetic_images(50, seed=3)
    x2, y2 = synthetic_images(50, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert x.shape == (50, 8, 8, 1) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [10] * len(CLASS_NAMES)
    assert not np.array_equal(synthetic_images(50, seed=4)[0], x)
    with pytest.raises(ValueError, match="`num_examples`"):
        synthetic_images(0)
    with pytest.raises(ValueError, match="`size`"):
        synthetic_images(5, size=4)


def test_later_iterations_are_at_least_as_accurate():
    result = _example().main(["--max-examples", "2000", "--epochs", "8"])
    accuracy = result["accuracy"]
    print("per-iteration test accuracy", [round(a, 3) for a in accuracy])
    assert len(accuracy) == 3
    assert accuracy[-1] >= accuracy[0]
    assert accuracy[-1] > 1.5 / len(CLASS_NAMES)  # well above chance


def test_example_on_mock_mnist():
    with tfds.testing.mock_data(
        num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE
    ):
        result = _example().main(
            [
                "--dataset",
                "mnist",
                "--epochs",
                "1",
                "--filters",
                "2",
                "--iterations",
                "2",
                "--batch-size",
                "8",
            ]
        )
    assert len(result["accuracy"]) == 2


def test_example_missing_dataset(tmp_path):
    with pytest.raises(
        keras_feedback.datasets.DatasetNotPreparedError, match="tfds build cifar10"
    ):
        _example().main(["--dataset", "cifar10", "--data-dir", str(tmp_path)])


# --- staged training ---------------------------------------------------------


class _Snapshots(keras.callbacks.Callback):
    """The weights and flags at the start and end of every fit (stage)."""

    def __init__(self, loop):
        super().__init__()
        self.loop = loop
        self.stages = []

    def _values(self):
        return {id(v): v.numpy().copy() for v in self.model.weights}

    def on_train_begin(self, logs=None):
        self.stages.append(
            {
                "begin": self._values(),
                "loop": self.loop.feedback_enabled,
                "trainable": {id(v) for v in self.model.trainable_weights},
            }
        )

    def on_train_end(self, logs=None):
        self.stages[-1]["end"] = self._values()


def _unchanged(stage, variables):
    return all(
        np.array_equal(stage["begin"][id(v)], stage["end"][id(v)]) for v in variables
    )


def _all_changed(stage, variables):
    return all(
        not np.array_equal(stage["begin"][id(v)], stage["end"][id(v)])
        for v in variables
    )


def test_staged_fit_freezes_exactly_the_other_part():
    example = _example()
    model = example.build_model(
        (8, 8, 1), 5, iterations=3, filters=4, feedback="concat"
    )
    model.compile(
        "adam",
        loss=training.IterationLoss(
            keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        ),
    )
    loop = model.get_layer("feedback_loop")
    groups = training.weight_groups(model)
    projection = loop.projection
    assert [id(v) for v in groups["feedback"]] == [id(v) for v in projection.weights]
    assert {id(v) for v in groups["feedforward"]} == {id(v) for v in loop.block.weights}
    x, y = synthetic_images(256, seed=5)
    snapshots = _Snapshots(loop)
    histories = training.staged_fit(
        model,
        [
            {"train": "feedforward", "epochs": 2, "loop": False},
            training.Stage(train="feedback", epochs=2, learning_rate=1e-2),
            {"train": "all", "epochs": 1, "learning_rate": 1e-3},
        ],
        x,
        y,
        batch_size=64,
        verbose=0,
        callbacks=[snapshots],
    )
    assert [len(h.history["loss"]) for h in histories] == [2, 2, 1]
    first, second, third = snapshots.stages
    feedforward, feedback = groups["feedforward"], groups["feedback"]
    assert first["trainable"] == {id(v) for v in feedforward} and not first["loop"]
    assert second["trainable"] == {id(v) for v in feedback} and second["loop"]
    assert third["trainable"] == {id(v) for v in feedforward + feedback}
    assert _unchanged(first, feedback) and _all_changed(first, feedforward)
    assert _unchanged(second, feedforward) and _all_changed(second, feedback)
    assert _all_changed(third, feedforward + feedback)
    # The stage's learning rate went to a fresh optimizer of the same class.
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 1e-3)
    # Everything is restored afterwards.
    assert loop.feedback_enabled
    assert len(model.trainable_weights) == len(feedforward) + len(feedback)


def test_weight_groups_of_a_sequence_model():
    inputs = keras.Input((4, 3))
    layer = keras_feedback.layers.Feedback(5, feedback_units=2, attention=True)
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    groups = training.weight_groups(model)
    assert [v.name for v in groups["feedback"]] == [
        v.name for v in layer.feedback_weights
    ]
    assert {v.name for v in groups["feedforward"]} == {
        "kernel",
        "recurrent_kernel",
        "bias",
    }
    assert len(groups["feedforward"]) == 5  # the cell's 3 and the Dense's 2


def test_staged_fit_bad_input():
    inputs = keras.Input((6, 6, 1))
    block = keras.layers.Conv2D(2, 3, padding="same")
    model = keras.Model(
        inputs, keras_feedback.layers.FeedbackLoop(block, 2, feedback="concat")(inputs)
    )
    x, y = np.zeros((4, 6, 6, 1)), np.zeros((4, 6, 6, 2))
    with pytest.raises(ValueError, match="must be compiled"):
        training.staged_fit(model, [{"train": "all"}], x, y)
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match="has no trainable feedback weights"):
        training.staged_fit(model, [{"train": "feedback"}], x, y, verbose=0)
    with pytest.raises(ValueError, match="`train` must be one of"):
        training.staged_fit(model, [{"train": "head"}], x, y)
    with pytest.raises(ValueError, match="unknown keys"):
        training.staged_fit(model, [{"train": "all", "lr": 0.1}], x, y)
    with pytest.raises(ValueError, match="`epochs` is set per stage"):
        training.staged_fit(model, [{"train": "all"}], x, y, epochs=3)
    with pytest.raises(ValueError, match="`epochs` must be a positive integer"):
        training.Stage(epochs=0)
    with pytest.raises(ValueError, match="non-empty list"):
        training.staged_fit(model, [], x, y)
