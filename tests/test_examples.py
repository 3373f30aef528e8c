"""Every example runs at small size, prints its held-out metric beside its
trivial baseline, and beats it. No network: the built-in tasks are generated
locally, and the examples that read a real dataset (``mnist_rows``,
``sentiment_imdb``) fall back to their synthetic stand-in. One example,
``translate_dates``, runs in tests/test_seq2seq_task.py instead (with the
same checks), which trains it for its own tests too (``ELSEWHERE``)."""

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import load_example

from keras_feedback import engine

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")
NAMES = sorted(
    name[:-3]
    for name in os.listdir(EXAMPLES)
    if name.endswith(".py") and not name.startswith("_")
)


# The built-in TFDS configs the examples read, generated with as many
# examples per split as SMALL's --max-examples takes rather than all of them
# (65,000 for the adding problem, 27,000 for copy memory: 8 s and 12 s of
# the test). The registered config's sizes are changed only while the data
# is generated, into this module's own folder (the folder the other modules
# share keeps the full splits).
GENERATED = {
    ("adding_problem", "T50"): 2000,
    ("copy_memory", "delay10"): 2000,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import tensorflow_datasets as tfds

    path = str(tmp_path_factory.mktemp("examples_tfds"))
    for (name, config_name), count in GENERATED.items():
        config = tfds.builder_cls(name).builder_configs[config_name]
        with pytest.MonkeyPatch.context() as patch:
            for split in ("train", "validation", "test"):
                patch.setattr(config, f"num_{split}", count)
            tfds.builder(f"{name}/{config_name}", data_dir=path).download_and_prepare()
    return path


def test_every_example_is_tested():
    assert set(NAMES) == set(SMALL) | set(ELSEWHERE), "add the new example to SMALL"
    assert not set(SMALL) & set(ELSEWHERE)


@pytest.mark.parametrize("name", NAMES)
def test_help_says_what_it_shows_its_data_runtime_and_baseline(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_example(name).main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    for part in ("data:", "runtime at defaults: about", "trivial baseline:"):
        assert part in out, part
    assert "RUNTIME" not in out  # the placeholder was filled in


# Small arguments with which each example still beats its baseline; "{data}"
# is the shared TFDS folder, "{tmp}" the test's own.
SMALL = {
    "quickstart": ["--epochs", "15", "--samples", "256"],
    "adding_problem": [
        "--length", "50", "--steps", "500", "--batch-size", "32",
        "--max-examples", "2000", "--data-dir", "{data}",
    ],
    "copy_memory": [
        "--delay", "10", "--steps", "300", "--batch-size", "64",
        "--max-examples", "2000", "--units", "32", "--feedback-units", "8",
        "--data-dir", "{data}",
    ],
    "char_language_model": [
        "--text-dir", "{tmp}/texts", "--length", "64", "--steps", "80",
        "--units", "32", "--feedback-units", "4", "--sample", "5",
    ],
    "mnist_rows": [
        "--synthetic-examples", "1500", "--epochs", "5", "--batch-size", "64",
        "--units", "32", "--data-dir", "{tmp}/empty",
    ],
    "sentiment_imdb": [
        "--synthetic-examples", "1500", "--epochs", "4", "--units", "16",
        "--data-dir", "{tmp}/empty",
    ],
    "iterative_feedback_images": ["--max-examples", "1000", "--epochs", "6"],
    "equilibrium_images": [
        "--max-examples", "600", "--epochs", "3", "--jacobian-regularization",
        "0", "--max-iterations", "10", "--tolerance", "1e-2", "--filters", "16",
        "--solver", "picard",
    ],
    "distributed_training": [
        "--single-device", "--epochs", "10", "--steps-per-epoch", "8",
        "--time-steps", "6",
    ],
    "streaming_litert": [
        "--length", "50", "--steps", "500", "--batch-size", "32",
        "--max-examples", "2000", "--test-examples", "32", "--data-dir", "{data}",
    ],
}  # fmt: skip
# The examples another module trains once for its own tests, with this
# module's checks of the printed held-out metric and baseline (training
# them here too would cost the run a second training).
ELSEWHERE = {
    "translate_dates": "tests/test_seq2seq_task.py, fixture `trained`",
}
PLOTS = {"quickstart": ["learning_curve.png", "trace.png"]}
# The examples whose test runs the engine "auto" picks (the fused engine, as
# the conftest sets the size rule): one, which costs about the same either
# way. The others run the reference loop (``engine.scope``), which gives the
# fused engine's results (test_engine_agreement.py) without XLA's compile
# time: at these sizes that costs more than it saves (measured on 2 busy
# cores, the held-out metrics the same: equilibrium_images 48 s against
# 28 s, streaming_litert 43 s against 25 s, distributed_training 22 s
# against 13 s).
FUSED = ("adding_problem",)


def _argv(name, data_dir, tmp_path):
    argv = [a.format(data=data_dir, tmp=tmp_path) for a in SMALL[name]]
    argv += ["--out", str(tmp_path / "out")]
    return argv + ([] if name in PLOTS else ["--no-plot"])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_example_beats_its_baseline_on_held_out_data(name, data_dir, tmp_path, capsys):
    if name == "char_language_model":
        (tmp_path / "texts").mkdir()
        (tmp_path / "texts" / "t.txt").write_text(
            "the feedback loop feeds back. " * 400
        )
    example = load_example(name)
    with contextlib.ExitStack() as stack:
        if name not in FUSED:
            stack.enter_context(engine.scope("reference"))
        result = example.main(_argv(name, data_dir, tmp_path))
    out = capsys.readouterr().out
    assert "held-out" in out and "trivial baseline (" in out
    assert "beats the baseline: yes" in out
    assert result["beats_baseline"], result
    assert np.isfinite(result["value"]) and np.isfinite(result["baseline"])
    for plot in PLOTS.get(name, []):
        assert (tmp_path / "out" / plot).is_file()
    if name in ("mnist_rows", "sentiment_imdb"):
        assert "SYNTHETIC" in out and result["source"].startswith("synthetic")
    if name == "streaming_litert":
        assert result["max_abs_error"] < 1e-5
        np.testing.assert_allclose(result["final"], result["keras_final"], atol=1e-5)


def test_offline_without_download_runs_the_synthetic_stand_in_quietly(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(EXAMPLES, "mnist_rows.py"),
            "--data-dir",
            str(tmp_path),
            "--synthetic-examples",
            "200",
            "--epochs",
            "1",
            "--units",
            "8",
            "--out",
            str(tmp_path / "out"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert result.returncode == 0, result.stderr
    assert f"tfds build mnist --data_dir {tmp_path}" in result.stdout
    assert "--download" in result.stdout and "SYNTHETIC" in result.stdout
    assert (tmp_path / "out" / "learning_curve.png").is_file()
    # TensorFlow's C++ start-up logs are not shown without --verbose.
    for noise in ("cudart_stub", "absl::InitializeLog", "cuInit", "oneDNN"):
        assert noise not in result.stderr, result.stderr


def test_mnist_rows_reads_mnist_when_it_is_prepared(tmp_path, capsys):
    import tensorflow_datasets as tfds

    with (
        engine.scope("reference"),
        tfds.testing.mock_data(
            num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE
        ),
    ):
        result = load_example("mnist_rows").main(
            ["--epochs", "1", "--batch-size", "8", "--units", "8", "--no-plot"]
        )
    out = capsys.readouterr().out
    assert result["source"] == "mnist" and "SYNTHETIC" not in out
    assert "trivial baseline (" in out and "beats the baseline:" in out
