"""`keras-feedback export`, and the files of the export/ folder run for real:
the example model, the REST request bodies (fed to the reloaded SavedModel's
signatures, as TF Serving would after decoding them) and the LiteRT streaming
loop."""

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_feedback import cli

EXPORT_DIR = Path(__file__).resolve().parent.parent / "export"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, EXPORT_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_rows(text):
    """The rows of the CLI's table: {export name: [cells...]}."""
    lines = text.strip().splitlines()
    header = lines.index(next(line for line in lines if line.startswith("export ")))
    rows = {}
    for line in lines[header + 2 :]:
        if line.startswith("checked on"):
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example model, exported by the CLI as TF Serving's layout and as a
    LiteRT step model."""
    root = tmp_path_factory.mktemp("example")
    make_example = load_script("make_example")
    assert make_example.main([str(root)]) == 0
    model_path = root / "feedback.keras"
    code = cli.main(
        [
            "export",
            str(model_path),
            "--saved-model",
            str(root / "serving" / "feedback"),
            "--litert",
            str(root / "feedback_step.tflite"),
            "--streaming",
            "--time",
            "12",
        ]
    )
    return root, code, make_example.build_model()


def test_cli_exports_and_verifies(example, capsys):
    root, code, _ = example
    assert code == 0
    # The fixture's output is gone by now; run the verification table again
    # on the written files with another seed.
    code = cli.main(
        [
            "export",
            str(root / "feedback.keras"),
            "--saved-model",
            str(root / "again"),
            "--litert",
            str(root / "again.tflite"),
            "--seed",
            "3",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    rows = table_rows(out)
    assert set(rows) == {
        "SavedModel serving_default",
        "SavedModel step",
        "LiteRT sequence float32",
    }
    for name, cells in rows.items():
        path, size, max_abs, max_rel, tolerance, latency, status = cells
        assert status == "OK", (name, cells)
        assert float(max_abs) <= 1e-5
        assert float(max_rel) <= float(tolerance)
        assert float(latency) > 0
        assert size.endswith("KiB")
    assert (root / "again" / "1" / "saved_model.pb").is_file()
    assert (root / "again.tflite").is_file()


def test_cli_bad_input(example, capsys, tmp_path):
    root, _, _ = example
    model = str(root / "feedback.keras")
    lite = str(tmp_path / "q.tflite")
    code = cli.main(
        ["export", model, "--litert", lite, "--quantize", "int8", "--streaming"]
    )
    assert code == 2
    assert "`representative_data` is required" in capsys.readouterr().err
    saved = str(root / "serving" / "feedback")
    code = cli.main(["export", model, "--saved-model", saved])
    assert code == 2
    assert "already exists. Pass overwrite=True" in capsys.readouterr().err
    assert cli.main(["export", model]) == 2
    assert "--saved-model DIR and/or --litert FILE" in capsys.readouterr().err
    assert not (tmp_path / "q.tflite").exists()


def test_cli_int8_step_model(example, capsys, tmp_path):
    root, _, _ = example
    data = tmp_path / "calibration.npy"
    np.save(data, np.random.default_rng(0).normal(size=(16, 12, 3)).astype("float32"))
    code = cli.main(
        [
            "export",
            str(root / "feedback.keras"),
            "--litert",
            str(tmp_path / "q.tflite"),
            "--quantize",
            "int8",
            "--streaming",
            "--representative-data",
            str(data),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    cells = table_rows(out)["LiteRT step int8"]
    assert cells[-1] == "reported"
    assert 0 < float(cells[3]) < 0.35  # max rel error: int8 of a gru (see tests)


def _feed(signature, inputs):
    specs = signature.structured_input_signature[1]
    assert sorted(inputs) == sorted(specs)
    return {
        name: tf.constant(value, dtype=specs[name].dtype)
        for name, value in inputs.items()
    }


def test_rest_requests_match_the_signatures(example):
    root, _, model = example
    loaded = tf.saved_model.load(str(root / "serving" / "feedback" / "1"))
    requests = {
        name: json.loads((EXPORT_DIR / "requests" / f"{name}.json").read_text())
        for name in ("serving_default", "initial_state", "step")
    }
    outputs = {}
    for name, request in requests.items():
        assert request["signature_name"] == name
        signature = loaded.signatures[name]
        outputs[name] = signature(**_feed(signature, request["inputs"]))
    x = np.asarray(requests["serving_default"]["inputs"]["x"], "float32")
    expected = np.asarray(model(x))
    np.testing.assert_allclose(outputs["serving_default"]["y"], expected, atol=1e-5)
    # The step request is the first step of that sequence from zero states,
    # and those zero states are what initial_state returns for batch 1.
    step_inputs = requests["step"]["inputs"]
    np.testing.assert_array_equal(step_inputs["x"], x[:, 0])
    for state, value in outputs["initial_state"].items():
        np.testing.assert_array_equal(value, step_inputs[state])
    np.testing.assert_allclose(outputs["step"]["y"], expected[:, 0], atol=1e-5)


def test_litert_streaming_script(example, capsys):
    root, _, model = example
    streaming = load_script("litert_streaming")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 10, 3)).astype("float32")
    stream = streaming.Stream(str(root / "feedback_step.tflite"), batch_size=3)
    first = np.stack([stream(x[:, t]) for t in range(10)], axis=1)
    np.testing.assert_allclose(first, model(x), atol=1e-5)
    stream.reset()
    again = np.stack([stream(x[:, t]) for t in range(10)], axis=1)
    np.testing.assert_array_equal(again, first)
    # Streams may start from given states: Keras from the same initial state.
    start = {
        "feedback_h": rng.normal(size=(3, 8)).astype("float32"),
        "feedback_c": rng.uniform(size=(3, 4)).astype("float32"),
    }
    stream.reset(start)
    started = np.stack([stream(x[:, t]) for t in range(10)], axis=1)
    hidden = model.get_layer("feedback")(
        x, initial_state=[start["feedback_h"], start["feedback_c"]]
    )
    expected = np.asarray(model.get_layer("head")(hidden))
    np.testing.assert_allclose(started, expected, atol=1e-5)
    assert np.max(np.abs(started - first)) > 1e-3
    with pytest.raises(ValueError, match="'carry' is not a state of this model"):
        stream.reset({"carry": start["feedback_h"]})
    sequence = root / "sequence.npy"
    np.save(sequence, x[0, :4])
    assert streaming.main([str(root / "feedback_step.tflite"), str(sequence)]) == 0
    printed = [
        np.array(line.split(" ", 1)[1].strip("[] ").split(), float)
        for line in capsys.readouterr().out.strip().splitlines()
    ]
    np.testing.assert_allclose(printed, np.asarray(model(x[:1, :4]))[0], atol=1e-4)
