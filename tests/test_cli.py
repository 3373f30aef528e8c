"""The ``keras-feedback`` command's contract: help without TensorFlow, one exit
code table, user errors as one line on stderr, and ``train``'s options."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from keras_feedback import cli
from keras_feedback import datasets


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    # The same folder as tests/test_demo.py's: each task is generated once.
    path = tmp_path_factory.getbasetemp() / "keras_feedback_tfds"
    path.mkdir(exist_ok=True)
    return str(path)


def _command():
    return os.path.join(os.path.dirname(sys.executable), "keras-feedback")


def test_help_of_every_command_imports_no_tensorflow(tmp_path):
    # A tensorflow (and keras) that fails on import: help must not need it.
    for name in ("tensorflow", "keras"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"raise ImportError('{name} was imported')\n"
        )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    for command in ([], *([name] for name in cli.SUBCOMMANDS)):
        result = subprocess.run(
            [_command(), *command, "--help"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: keras-feedback"), result.stdout
        assert "exit codes: 0 success" in result.stdout
    # The blocker works: a command that runs does import TensorFlow.
    result = subprocess.run(
        [_command(), "diagnose", "no.keras", "--data", "x.npz"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "was imported" in result.stderr


def _write(path, text):
    path.write_text(text)
    return str(path)


def _model_file(tmp_path):
    inputs = keras.Input((None, 2))
    import keras_feedback

    outputs = keras_feedback.layers.Feedback(4, feedback_units=2)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(outputs))
    path = tmp_path / "model.keras"
    model.save(path)
    return str(path)


def _run(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _user_errors(tmp_path, data_dir):
    """(argv, words the one-line message must hold) for every user error."""
    afile = _write(tmp_path / "afile", "not a folder")
    corrupt = _write(tmp_path / "corrupt.keras", "not a zip file")
    model = _model_file(tmp_path)
    good = json.dumps({"feedback": {"units": 4}})
    empty = str(tmp_path / "empty_data")
    train = ["train", "--dataset", "adding_problem/T50", "--data-dir", empty]

    def config(name, text):
        return _write(tmp_path / f"{name}.json", text)

    return [
        (["export", model, "--litert", "x.tflite", "--time", "-1"], "--time"),
        (["export", model, "--litert", "x.tflite", "--batch", "-2"], "--batch"),
        (
            ["export", model, "--litert", "x.tflite", "--tolerance", "nan"],
            "--tolerance",
        ),
        (["export", model], "--saved-model DIR and/or --litert FILE"),
        (["export", model, "--quantize", "int8", "--saved-model", "s"], "--quantize"),
        (["export", model, "--litert", os.path.join(afile, "x.tflite")], "--litert"),
        (["export", model, "--saved-model", os.path.join(afile, "s")], "--saved-model"),
        (["export", corrupt, "--litert", "x.tflite"], "not a loadable .keras model"),
        (["export", "missing.keras", "--litert", "x.tflite"], "no file at"),
        (["export", model, "--litert", "x.tflite", "--version", "0"], "--version"),
        ([*train, "--model", config("typo", '{"epoch": 3, "feedback": {}}')], "epoch"),
        (
            [
                *train,
                "--model",
                config("rate", '{"learning_rate": "fast", "feedback": {}}'),
            ],
            '"learning_rate" must be a positive number',
        ),
        (
            [
                *train,
                "--model",
                config("colour", '{"feedback": {"units": 4, "colour": 1}}'),
            ],
            "colour",
        ),
        ([*train, "--model", config("json", "{not json")], "is not JSON"),
        ([*train, "--model", "missing.json"], "--model 'missing.json'"),
        (
            [*train, "--model", config("ok", good), "--out", os.path.join(afile, "o")],
            "--out",
        ),
        ([*train, "--model", config("ok", good), "--epochs", "0"], "--epochs"),
        ([*train, "--model", config("ok", good), "--batch-size", "-1"], "--batch-size"),
        (
            [*train, "--model", config("ok", good), "--validation-split", "1.5"],
            "--validation-split",
        ),
        (
            [
                *train,
                "--model",
                config("ok", good),
                "--out",
                str(tmp_path / "o"),
                "--resume",
            ],
            "--resume: no checkpoint",
        ),
        (
            [
                "train",
                "--dataset",
                "mnist",
                "--data-dir",
                empty,
                "--model",
                config("ok", good),
            ],
            f"tfds build mnist --data_dir {empty}",
        ),
        (["demo", "--steps", "0"], "--steps"),
        (["demo", "--task", "mnist"], "--task"),
        (["demo", "--out", os.path.join(afile, "out")], "--out"),
        (["diagnose", corrupt, "--data", "x.npz"], "not a loadable .keras model"),
        (
            ["diagnose", "missing.keras", "--data", "x.npz"],
            "no file at 'missing.keras'",
        ),
        (["diagnose", model, "--data", "missing.npz"], "--data: no file at"),
        (["diagnose", model, "--data", corrupt.replace(".keras", ".npz")], "--data"),
        (["diagnose", model, "--data", "x.npz", "--batch-size", "0"], "--batch-size"),
        (
            ["diagnose", model, "--data", "x.npz", "--json", os.path.join(afile, "r")],
            "--json",
        ),
        (["no-such-command"], "invalid choice"),
    ]


def test_every_user_error_is_one_line_naming_the_flag(tmp_path, data_dir, capsys):
    _write(tmp_path / "corrupt.npz", "not an archive")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        cases = _user_errors(tmp_path, data_dir)
        for argv, words in cases:
            code, out, err = _run(argv, capsys)
            assert code == 2, (argv, out, err)
            assert err.endswith("\n") and err.count("\n") == 1, (argv, err)
            assert words in err, (argv, err)
            assert "Traceback" not in err + out, argv
    finally:
        os.chdir(cwd)
    # Nothing was generated or written by the failed train commands.
    assert not os.path.exists(tmp_path / "empty_data" / "adding_problem")
    assert not (tmp_path / "x.tflite").exists()


def test_debug_shows_the_traceback(tmp_path, capsys):
    corrupt = _write(tmp_path / "corrupt.keras", "not a zip file")
    with pytest.raises(Exception, match="not a loadable .keras model"):
        cli.main(["diagnose", corrupt, "--data", "x.npz", "--debug"])


def _events(folder):
    accumulator = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return {
        tag: [event.step for event in accumulator.Tensors(tag)]
        for tag in accumulator.Tags()[event_accumulator.TENSORS]
    }


def test_train_options_checkpoints_logs_resume(data_dir, tmp_path, capsys):
    config = {"feedback": {"units": 4, "feedback_units": 2}, "learning_rate": 0.01}
    model_file = _write(tmp_path / "model.json", json.dumps(config))
    out = tmp_path / "trained"
    argv = [
        "train",
        "--dataset",
        "adding_problem/T50",
        "--data-dir",
        data_dir,
        "--model",
        model_file,
        "--train-split",
        "validation[:128]",
        "--eval-split",
        "test[:64]",
        "--out",
        str(out),
        "--batch-size",
        "32",
    ]
    code, stdout, err = _run([*argv, "--epochs", "2"], capsys)
    assert code == 0, err
    checkpoints = out / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["epoch_001.keras", "epoch_002.keras"]
    assert "4/4" in stdout  # 128 examples in batches of 32
    assert _events(out / "logs" / "train")["epoch_loss"] == [0, 1]
    # --resume continues after epoch 2 with the optimizer's state.
    saved = keras.saving.load_model(checkpoints / "epoch_002.keras")
    code, stdout, err = _run([*argv, "--epochs", "3", "--resume"], capsys)
    assert code == 0, err
    assert "resuming after epoch 2" in stdout
    assert "Epoch 3/3" in stdout and "Epoch 2/3" not in stdout
    assert (checkpoints / "epoch_003.keras").is_file()
    resumed = keras.saving.load_model(checkpoints / "epoch_003.keras")
    assert int(resumed.optimizer.iterations) == int(saved.optimizer.iterations) + 4
    # The saved model has a dynamic time axis: it runs on any length.
    trained = keras.saving.load_model(out / "model.keras")
    assert trained.input_shape == (None, None, 2)
    x = datasets._adding_problem.generate(4, 20, np.random.default_rng(0))[0]
    assert trained.predict(x, verbose=0).shape == (4, 1)


def test_train_validation_split_holds_out_the_end(data_dir, tmp_path, capsys):
    model_file = _write(tmp_path / "model.json", json.dumps({"feedback": {"units": 4}}))
    code, stdout, err = _run(
        [
            "train",
            "--dataset",
            "adding_problem/T50",
            "--data-dir",
            data_dir,
            "--model",
            model_file,
            "--train-split",
            "validation",
            "--validation-split",
            "0.02",
            "--eval-split",
            "test[:32]",
            "--batch-size",
            "100",
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 0, err
    # validation has 5000 examples: 98 % train (49 batches of 100), 2 % held out.
    assert "49/49" in stdout and "val_loss" in stdout
    assert _events(tmp_path / "out" / "logs" / "validation")["epoch_loss"] == [0]
