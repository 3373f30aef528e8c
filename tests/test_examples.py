"""Every example runs at tiny size: built-in tasks, or TFDS's mock data for
the datasets that need a download (``imdb_reviews``, ``mnist``)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import load_example

from keras_feedback import datasets

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")
MINE = (
    "adding_problem",
    "copy_memory",
    "sentiment_imdb",
    "mnist_rows",
    "char_language_model",
    "streaming_litert",
)


_example = load_example


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    # Shared by the test modules of one session: each task is generated once.
    path = tmp_path_factory.getbasetemp() / "keras_feedback_tfds"
    path.mkdir(exist_ok=True)
    return str(path)


def _mock():
    return tfds.testing.mock_data(
        num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE
    )


@pytest.mark.parametrize("name", MINE)
def test_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _example(name).main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    assert "--" in out


def test_adding_problem_learns(data_dir):
    result = _example("adding_problem").main(
        [
            "--length",
            "50",
            "--steps",
            "40",
            "--max-examples",
            "256",
            "--data-dir",
            data_dir,
        ]
    )
    # An untrained model outputs about 0 (MSE about E[(u1+u2)^2] = 7/6).
    assert result["mse_after"] < result["mse_before"]
    assert result["baseline"] == pytest.approx(1 / 6)


def test_copy_memory_learns(data_dir):
    result = _example("copy_memory").main(
        [
            "--delay",
            "10",
            "--steps",
            "30",
            "--max-examples",
            "256",
            "--units",
            "16",
            "--feedback-units",
            "4",
            "--data-dir",
            data_dir,
        ]
    )
    assert result["loss_after"] < result["loss_before"]
    assert result["baseline"] == pytest.approx(10 * np.log(8) / 30)


def test_sentiment_imdb_on_mock_data():
    with _mock():
        result = _example("sentiment_imdb").main(
            [
                "--epochs",
                "3",
                "--batch-size",
                "8",
                "--max-length",
                "16",
                "--vocabulary-size",
                "200",
                "--units",
                "8",
                "--feedback-units",
                "4",
            ]
        )
    # Mock train and test splits hold the same 16 reviews: training fits them.
    assert result["loss_after"] < result["loss_before"]


def test_mnist_rows_on_mock_data():
    with _mock():
        result = _example("mnist_rows").main(
            [
                "--epochs",
                "3",
                "--batch-size",
                "8",
                "--units",
                "8",
                "--feedback-units",
                "4",
            ]
        )
    assert result["loss_after"] < result["loss_before"]


def test_char_language_model_learns_bytes(tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "t.txt").write_text("the feedback loop feeds back. " * 400)
    result = _example("char_language_model").main(
        [
            "--text-dir",
            str(texts),
            "--length",
            "64",
            "--steps",
            "30",
            "--units",
            "16",
            "--feedback-units",
            "4",
            "--sample",
            "5",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert result["loss_after"] < result["loss_before"]
    assert result["sample"].startswith("def ") and len(result["sample"]) >= 9


def test_streaming_litert_matches_keras_step_by_step(data_dir, tmp_path):
    result = _example("streaming_litert").main(
        [
            "--length",
            "50",
            "--steps",
            "5",
            "--max-examples",
            "64",
            "--data-dir",
            data_dir,
            "--out",
            str(tmp_path),
        ]
    )
    assert result["max_abs_error"] < 1e-5
    np.testing.assert_allclose(result["final"], result["keras_final"], atol=1e-5)


@pytest.mark.parametrize("name", ["mnist_rows", "sentiment_imdb"])
def test_missing_dataset_names_the_build_command(name, tmp_path):
    dataset = {"mnist_rows": "mnist", "sentiment_imdb": "imdb_reviews"}[name]
    with pytest.raises(datasets.DatasetNotPreparedError) as error:
        _example(name).main(["--data-dir", str(tmp_path)])
    assert f"tfds build {dataset} --data_dir {tmp_path}" in str(error.value)


def test_missing_dataset_from_the_command_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(EXAMPLES, "mnist_rows.py"),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 1
    assert f"tfds build mnist --data_dir {tmp_path}" in result.stderr
    assert "Traceback" not in result.stderr
