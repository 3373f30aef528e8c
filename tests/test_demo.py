"""The ``keras-feedback demo`` and ``keras-feedback train`` commands, at tiny
size: exports verified, figures written, missing datasets explained."""

import json

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from ai_edge_litert.interpreter import Interpreter

from keras_feedback import cli
from keras_feedback import datasets
from keras_feedback._commands import demo
from keras_feedback._commands import train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    # Shared by the test modules of one session: each task is generated once.
    path = tmp_path_factory.getbasetemp() / "keras_feedback_tfds"
    path.mkdir(exist_ok=True)
    return str(path)


def _table_value(out, key):
    for line in out.splitlines():
        if line.strip().startswith(key + "  "):
            return line.strip()[len(key) :].strip()
    raise AssertionError(f"{key!r} not in the table:\n{out}")


def test_demo_exports_verify_and_figures_are_written(
    data_dir, tmp_path, capsys, auto_engine_as_shipped
):
    # The command as a user runs it: at T=50 the size rule picks the
    # reference loop (the default T=100 runs the fused engine, as the wheel
    # smoke job's demo does).
    out_dir = tmp_path / "out"
    code = cli.main(
        [
            "demo",
            "--task",
            "adding_problem/T50",
            "--steps",
            "30",
            "--qat-steps",
            "10",
            "--max-examples",
            "256",
            "--out",
            str(out_dir),
            "--data-dir",
            data_dir,
        ]
    )
    out = capsys.readouterr().out
    # 30 steps do not reach the goal: the job ran, its check failed (exit 1).
    assert code == 1, out
    assert "(NOT reached: test MSE < 0.01)" in _table_value(out, "test MSE")
    assert "the goal (test MSE < 0.01) was NOT reached" in out
    assert _table_value(out, "parity").startswith("float OK")
    assert "int8 OK" in _table_value(out, "parity")
    float_error = float(_table_value(out, "LiteRT float32 error").split()[0])
    assert float_error <= demo.FLOAT_TOLERANCE
    for name in ("learning_curve.png", "feedback_trace.png"):
        image = matplotlib.image.imread(out_dir / name)
        assert image.ndim == 3 and image.shape[0] > 100
        assert image[..., :3].std() > 0.05  # not a blank canvas

    # The exported forms agree with each other, outside the demo's checks.
    x = datasets._adding_problem.generate(3, 50, np.random.default_rng(7))[0]
    serving = tf.saved_model.load(str(out_dir / "saved_model" / "1"))
    expected = serving.signatures["serving_default"](x=tf.constant(x))["y"]
    expected = np.reshape(expected.numpy(), (3,))
    runner = Interpreter(
        model_path=str(out_dir / "model_float32.tflite")
    ).get_signature_runner("serving_default")
    lite = np.reshape(runner(x=x)["y"], (3,))
    np.testing.assert_allclose(lite, expected, atol=1e-5)
    step = Interpreter(
        model_path=str(out_dir / "model_int8_step.tflite")
    ).get_signature_runner("step")
    names = [n for n in step.get_input_details() if n != "x"]
    states = {
        n: np.zeros((3, step.get_input_details()[n]["shape_signature"][-1]), "float32")
        for n in names
    }
    for t in range(50):
        result = step(x=np.ascontiguousarray(x[:, t]), **states)
        states = {n: result[n] for n in names}
    scale = np.max(np.abs(expected))
    int8 = np.reshape(result["y"], (3,))
    assert np.max(np.abs(int8 - expected)) <= demo.INT8_RELATIVE_TOLERANCE * scale


def test_demo_rejects_unknown_tasks(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--task", "mnist"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'mnist'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["demo", "--steps", "0"])
    assert "expected a positive integer, got '0'" in capsys.readouterr().err


def _config(tmp_path, config):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_train_on_a_missing_dataset_prints_the_build_command(tmp_path, capsys):
    model = _config(tmp_path, {"feedback": {"units": 4}})
    empty = str(tmp_path / "empty")
    code = cli.main(
        ["train", "--dataset", "mnist", "--data-dir", empty, "--model", model]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"tfds build mnist --data_dir {empty}" in err
    assert "is not prepared" in err


def test_train_rejects_bad_model_files(data_dir, tmp_path, capsys):
    model = _config(tmp_path, {"feedback": {"units": 4}, "epoch": 3})
    code = cli.main(["train", "--dataset", "adding_problem/T50", "--model", model])
    assert code == 2
    assert "unknown keys ['epoch']" in capsys.readouterr().err
    model = _config(tmp_path, {"feedback": {"units": 4, "colour": "red"}})
    _, task = datasets.load("adding_problem/T50", "test[:4]", data_dir=data_dir)
    with pytest.raises(train.ConfigError, match="colour"):
        train.build_model(task, train.read_config(model))


def test_train_adding_problem_saves_a_model_that_learned(data_dir, tmp_path, capsys):
    config = {
        "feedback": {"units": 8, "feedback_units": 4, "core": "gru"},
        "batch_size": 32,
        "epochs": 1,
        "steps_per_epoch": 40,
        "learning_rate": 0.01,
    }
    model_file = _config(tmp_path, config)
    out = tmp_path / "trained"
    code = cli.main(
        [
            "train",
            "--dataset",
            "adding_problem/T50",
            "--data-dir",
            data_dir,
            "--model",
            model_file,
            "--train-split",
            "train[:512]",
            "--eval-split",
            "test[:256]",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    test, task = datasets.load(
        "adding_problem/T50", "test[:256]", data_dir=data_dir, batch_size=256
    )
    trained = keras.saving.load_model(out / "model.keras")
    keras.utils.set_random_seed(0)
    untrained = train.build_model(task, train.read_config(model_file))
    assert trained.evaluate(test, verbose=0) < untrained.evaluate(test, verbose=0)


def test_train_scalar_regression_keeps_the_output_axis(data_dir, tmp_path):
    # (batch,) outputs would make Keras's "mse" skip its division by the
    # replica count under tf.distribute (gradients x replicas): the model
    # outputs (batch, 1), and its loss against (batch,) targets is the MSE.
    model_file = _config(tmp_path, {"feedback": {"units": 4}})
    data, task = datasets.load(
        "adding_problem/T50", "test[:8]", data_dir=data_dir, batch_size=8
    )
    model = train.build_model(task, train.read_config(model_file))
    assert model.output_shape == (None, 1)
    x, y = next(iter(data))
    assert y.shape == (8,)
    predicted = np.asarray(model.predict(x, verbose=0))[:, 0]
    expected = np.mean((predicted - np.asarray(y)) ** 2)
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), expected, rtol=1e-5)


def test_train_mnist_rows_from_a_keras_model_config(tmp_path, capsys):
    import keras_feedback

    inputs = keras.Input((28, 28))
    hidden = keras_feedback.layers.Feedback(8, feedback_units=2)(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(hidden)
    model = keras.Model(inputs, outputs)
    config = {"model": json.loads(model.to_json()), "epochs": 2, "batch_size": 8}
    out = tmp_path / "trained"
    mock = tfds.testing.mock_data(
        num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE
    )
    with mock:
        code = cli.main(
            [
                "train",
                "--dataset",
                "mnist",
                "--model",
                _config(tmp_path, config),
                "--out",
                str(out),
            ]
        )
    stdout = capsys.readouterr().out
    assert code == 0
    assert "image input 'image' (28 steps x 28)" in stdout
    assert "sparse_categorical_accuracy" in stdout
    trained = keras.saving.load_model(out / "model.keras")
    assert isinstance(trained.layers[1], keras_feedback.layers.Feedback)
