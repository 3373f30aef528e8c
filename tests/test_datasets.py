"""The built-in TFDS tasks and ``keras_feedback.datasets.load``."""

import logging
import math
import re

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_feedback import datasets
from keras_feedback.datasets import _adding_problem
from keras_feedback.datasets import _char_text
from keras_feedback.datasets import _common
from keras_feedback.datasets import _copy_memory


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    # Shared by the test modules of one session: each task is generated once.
    path = tmp_path_factory.getbasetemp() / "keras_feedback_tfds"
    path.mkdir(exist_ok=True)
    return str(path)


def _arrays(builder, split):
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    examples = list(tfds.as_numpy(dataset))
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _sorted_rows(a):
    """Rows of ``a`` in a canonical order (TFDS shuffles examples on write)."""
    flat = a.reshape(len(a), -1)
    return flat[np.lexsort(flat.T[::-1])]


# --- adding problem -------------------------------------------------------


def test_adding_problem_targets_are_the_sum_of_the_marked_values():
    rng = np.random.default_rng(3)
    inputs, targets, positions = _adding_problem.generate(500, 30, rng)
    values, markers = inputs[..., 0], inputs[..., 1]
    assert np.all((values >= 0) & (values < 1))
    np.testing.assert_array_equal(markers.sum(axis=1), 2)
    marked = [np.flatnonzero(row) for row in markers]
    np.testing.assert_array_equal(np.stack(marked), positions)
    assert np.all(positions[:, 0] < 15) and np.all(positions[:, 1] >= 15)
    np.testing.assert_allclose(targets, (values * markers).sum(axis=1), rtol=1e-6)


def test_adding_problem_baseline_is_the_mse_of_predicting_one():
    rng = np.random.default_rng(4)
    _, targets, _ = _adding_problem.generate(200_000, 10, rng)
    mse = float(np.mean((targets - 1.0) ** 2))
    config = datasets.AddingProblem.builder_configs["T100"]
    assert abs(mse - config.baseline_loss) < 3e-3


def test_adding_problem_marks_both_halves_uniformly():
    rng = np.random.default_rng(5)
    _, _, positions = _adding_problem.generate(40_000, 10, rng)
    first = np.bincount(positions[:, 0], minlength=10)
    second = np.bincount(positions[:, 1], minlength=10)
    assert first[5:].sum() == 0 and second[:5].sum() == 0
    np.testing.assert_allclose(first[:5] / 40_000, 0.2, atol=0.01)
    np.testing.assert_allclose(second[5:] / 40_000, 0.2, atol=0.01)


@pytest.mark.parametrize("length", [1, 0, 2.5, True])
def test_adding_problem_rejects_bad_lengths(length):
    with pytest.raises(ValueError, match=f"`length`.*got {length!r}"):
        _adding_problem.generate(3, length, np.random.default_rng(0))


def test_builders_are_registered_on_import():
    names = tfds.list_builders()
    for name in ("adding_problem", "copy_memory", "char_text"):
        assert name in names
    configs = datasets.AddingProblem.builder_configs
    assert {c: configs[c].length for c in configs} == {
        "T50": 50,
        "T100": 100,
        "T200": 200,
        "T500": 500,
    }
    assert sorted(datasets.CopyMemory.builder_configs) == [
        "delay10",
        "delay100",
        "delay200",
        "delay50",
    ]


def test_tfds_load_of_a_registered_config_gives_the_seeded_examples(data_dir):
    ds = tfds.load("adding_problem/T50", split="test", data_dir=data_dir)
    loaded = {k: np.stack(v) for k, v in _collect(tfds.as_numpy(ds)).items()}
    config = datasets.AddingProblem.builder_configs["T50"]
    assert len(loaded["target"]) == config.num_test
    rng = _common.split_rng("test", 0, 50)
    inputs, targets, _ = _adding_problem.generate(config.num_test, 50, rng)
    np.testing.assert_array_equal(_sorted_rows(loaded["inputs"]), _sorted_rows(inputs))
    np.testing.assert_array_equal(np.sort(loaded["target"]), np.sort(targets))
    # Inputs and targets stay paired: the target is the marked sum.
    values, markers = loaded["inputs"][..., 0], loaded["inputs"][..., 1]
    np.testing.assert_allclose(
        loaded["target"], (values * markers).sum(axis=1), rtol=1e-6
    )


def _collect(examples):
    out = {}
    for example in examples:
        for k, v in example.items():
            out.setdefault(k, []).append(v)
    return out


def test_builds_are_reproducible_and_splits_differ(tmp_path):
    config = _adding_problem.AddingProblemConfig(
        name="T6_tiny", length=6, num_train=40, num_validation=8, num_test=8
    )
    arrays = []
    for folder in ("a", "b"):
        builder = tfds.builder(
            "adding_problem", config=config, data_dir=str(tmp_path / folder)
        )
        builder.download_and_prepare()
        assert builder.info.splits["train"].num_examples == 40
        arrays.append({s: _arrays(builder, s)["inputs"] for s in ("train", "test")})
    first, second = arrays
    for split in ("train", "test"):
        np.testing.assert_array_equal(
            _sorted_rows(first[split]), _sorted_rows(second[split])
        )
    train_rows = {row.tobytes() for row in first["train"]}
    assert not train_rows & {row.tobytes() for row in first["test"]}


# --- copy memory ----------------------------------------------------------


def test_copy_memory_layout():
    delay = 7
    inputs, targets = _copy_memory.generate(300, delay, np.random.default_rng(0))
    length = delay + 20
    assert inputs.shape == targets.shape == (300, length)
    symbols = inputs[:, :10]
    assert np.all((symbols >= 1) & (symbols <= 8))
    np.testing.assert_array_equal(targets[:, -10:], symbols)
    np.testing.assert_array_equal(targets[:, :-10], 0)
    np.testing.assert_array_equal(inputs[:, 10 + delay - 1], 9)
    rest = np.delete(inputs, list(range(10)) + [10 + delay - 1], axis=1)
    np.testing.assert_array_equal(rest, 0)


@pytest.mark.parametrize("delay", [10, 50])
def test_copy_memory_baseline_is_the_memoryless_cross_entropy(delay):
    inputs, targets = _copy_memory.generate(64, delay, np.random.default_rng(1))
    # Without memory: certain of the blanks, uniform over the 8 symbols
    # where the symbols are recalled (the delimiter tells when).
    probabilities = np.zeros(targets.shape + (9,), np.float32)
    probabilities[:, :-10, 0] = 1.0
    probabilities[:, -10:, 1:] = 1.0 / 8
    loss = keras.losses.sparse_categorical_crossentropy(targets, probabilities)
    measured = float(np.mean(keras.ops.convert_to_numpy(loss)))
    expected = datasets.CopyMemory.builder_configs[f"delay{delay}"].baseline_loss
    assert math.isclose(measured, expected, rel_tol=1e-5)
    assert math.isclose(expected, 10 * math.log(8) / (delay + 20))


def test_copy_memory_builder_writes_the_generated_sequences(tmp_path):
    config = _copy_memory.CopyMemoryConfig(
        name="delay5_tiny", delay=5, num_train=16, num_validation=4, num_test=4
    )
    builder = tfds.builder("copy_memory", config=config, data_dir=str(tmp_path))
    builder.download_and_prepare()
    loaded = _arrays(builder, "train")
    inputs, targets = _copy_memory.generate(16, 5, _common.split_rng("train", 1, 5))
    np.testing.assert_array_equal(_sorted_rows(loaded["inputs"]), _sorted_rows(inputs))
    np.testing.assert_array_equal(loaded["targets"][:, -10:], loaded["inputs"][:, :10])


# --- char text --------------------------------------------------------------


def _text():
    rng = np.random.default_rng(0)
    words = ["feedback", "loop", "état", "α", "signal", "keras", "step"]
    return " ".join(rng.choice(words, 3000)).encode("utf-8")


def test_char_text_windows_come_from_their_split(tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    data = _text()
    (texts / "b.txt").write_bytes(data[len(data) // 2 :])
    (texts / "a.txt").write_bytes(data[: len(data) // 2])
    builder = tfds.builder("char_text", config="L64", data_dir=str(tmp_path / "data"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(texts))
    )
    full = _char_text.read_text(texts)
    assert full == data[: len(data) // 2] + b"\n" + data[len(data) // 2 :]
    n = len(full)
    parts = {
        "train": full[: int(0.9 * n)],
        "validation": full[int(0.9 * n) : int(0.95 * n)],
        "test": full[int(0.95 * n) :],
    }
    for split, part in parts.items():
        arrays = _arrays(builder, split)
        inputs, targets = arrays["inputs"], arrays["targets"]
        np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
        for row_in, row_target in zip(inputs, targets):
            window = bytes(row_in.astype(np.uint8)) + bytes([row_target[-1]])
            assert window in part, split
        if split != "train":
            windows = sorted(bytes(row.astype(np.uint8)) for row in inputs)
            starts = range(0, (len(part) - 1) // 64 * 64, 64)
            assert windows == sorted(part[i : i + 64] for i in starts)
    assert len(_arrays(builder, "train")["inputs"]) == (len(parts["train"]) - 1) // 64


def test_char_text_without_files_explains_where_they_go(tmp_path):
    with pytest.raises(FileNotFoundError, match="put one or more .txt files"):
        _char_text.read_text(tmp_path)
    with pytest.raises(datasets.DatasetNotPreparedError) as error:
        datasets.load("char_text/L64", data_dir=str(tmp_path))
    assert "--manual_dir" in str(error.value)
    assert "--imports keras_feedback.datasets" in str(error.value)


# --- load -------------------------------------------------------------------


def _mock(num_examples):
    return tfds.testing.mock_data(
        num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE
    )


def test_load_adding_problem_batches_and_task(data_dir):
    ds, task = datasets.load(
        "adding_problem/T50", "validation[:20]", data_dir=data_dir, batch_size=8
    )
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert [len(b) for b in xs] == [8, 8, 4]
    np.testing.assert_allclose(y, (x[..., 0] * x[..., 1]).sum(axis=1), rtol=1e-6)
    assert task.input_kind == "values" and task.input_size == 2
    assert task.time_steps == 50 and task.num_classes is None and task.loss == "mse"
    assert task.baseline_loss == pytest.approx(1 / 6)
    assert not task.per_step


def test_load_copy_memory_per_step_classes(tmp_path):
    ds, task = datasets.load(
        "copy_memory/delay10", "test[:6]", data_dir=str(tmp_path), batch_size=None
    )
    x, y = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    x, y = np.stack(x), np.stack(y)
    np.testing.assert_array_equal(y[:, -10:], x[:, :10])
    np.testing.assert_array_equal(x[:, 19], 9)
    assert task.per_step and task.num_classes == 9 and task.input_size == 10
    assert task.loss == "sparse_categorical_crossentropy"


def test_load_mnist_reads_images_row_by_row():
    with _mock(6):
        raw = list(tfds.as_numpy(tfds.load("mnist", split="train")))
        ds, task = datasets.load("mnist", "train", batch_size=None)
        rows = [(x.numpy(), y.numpy()) for x, y in ds]
    for example, (x, y) in zip(raw, rows):
        np.testing.assert_allclose(x, example["image"][..., 0] / 255.0, rtol=1e-6)
        assert y == example["label"]
    assert (task.input_kind, task.input_size, task.time_steps) == ("image", 28, 28)
    assert task.num_classes == 10


def test_load_text_as_left_padded_bytes():
    with _mock(4):
        raw = list(tfds.as_numpy(tfds.load("imdb_reviews", split="train")))
        ds, task = datasets.load(
            "imdb_reviews", "train", batch_size=None, max_length=12
        )
        rows = [x.numpy() for x, _ in ds]
    for example, x in zip(raw, rows):
        tokens = np.frombuffer(example["text"], np.uint8)[:12].astype(np.int32) + 1
        expected = np.concatenate([np.zeros(12 - len(tokens), np.int32), tokens])
        np.testing.assert_array_equal(x, expected)
    assert task.input_kind == "text" and task.input_size == 257
    assert task.num_classes == 2


def test_missing_dataset_raises_with_the_build_command(tmp_path):
    with pytest.raises(datasets.DatasetNotPreparedError) as error:
        datasets.load("mnist", data_dir=str(tmp_path))
    assert isinstance(error.value, FileNotFoundError)
    assert error.value.build_command == f"tfds build mnist --data_dir {tmp_path}"
    assert error.value.build_command in str(error.value)


def test_load_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="no TFDS dataset is registered as 'nope_x'"):
        datasets.load("nope_x", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="`batch_size`.*got 0"):
        datasets.load("adding_problem/T50", batch_size=0)
    with pytest.raises(ValueError, match="`max_length`.*got -3"):
        datasets.load("adding_problem/T50", max_length=-3)


@pytest.mark.parametrize(
    "split, words",
    [
        ("test[5:2]", "selects no examples"),
        ("test[:0]", "selects no examples"),
        ("nope", "is not a split of adding_problem"),
        ("test[:99999]", "is not a split of adding_problem"),
    ],
)
def test_load_refuses_empty_or_unknown_splits_at_once(data_dir, split, words):
    with pytest.raises(
        ValueError, match=rf"Argument `split`: '{re.escape(split)}' {words}"
    ):
        datasets.load("adding_problem/T50", split, data_dir=data_dir)


def test_load_prints_no_deprecation_warnings(data_dir, caplog):
    with caplog.at_level(logging.WARNING):
        datasets.load("adding_problem/T50", "test[:8]", data_dir=data_dir)
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]
