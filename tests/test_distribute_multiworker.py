"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1.

The workers run ``examples/distributed_training.py`` (strategy from
``TF_CONFIG`` through ``keras_feedback.training.distribute``, the fused XLA
engine, SGD, no shuffling). They must end with the weights one device
reaches with the same global batch, and a run killed with SIGKILL in the
middle of an epoch must resume from its backup to the same end.
"""

import importlib.util
import json
import os
import shutil
import signal
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_feedback import engine

pytestmark = pytest.mark.timeout(240)

EXAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "examples",
    "distributed_training.py",
)
EPOCHS, STEPS = 2, 3
KILL_AT = 4  # the second step of the second epoch
WAIT = 120  # seconds a group of workers may take
ARGV = [
    "--engine", "xla", "--epochs", str(EPOCHS), "--steps-per-epoch", str(STEPS),
    "--global-batch", "8", "--learning-rate", "0.1", "--time-steps", "8",
    "--units", "6", "--feedback-units", "3",
]  # fmt: skip


def _load_example():
    spec = importlib.util.spec_from_file_location("distributed_training", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(out, tasks=("worker-0", "worker-1")):
    results = []
    for task in tasks:
        with open(os.path.join(out, task, "result.json")) as f:
            result = json.load(f)
        with np.load(os.path.join(out, task, "weights.npz")) as weights:
            result["weights"] = [weights[k] for k in sorted(weights, key=_index)]
        result["model"] = os.path.join(out, "model.keras")
        results.append(result)
    return results


def _index(key):  # np.savez names arrays arr_0, arr_1, ...
    return int(key.rsplit("_", 1)[1])


def _max_difference(a, b):
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def _run_workers(example, out, configs, extra=(), until=None):
    processes = example.start_workers(ARGV + ["--out", out], configs, out, extra)
    try:
        example.wait_workers(processes, out, WAIT, until=until)
        if until is not None:
            os.kill(processes[-1].pid, signal.SIGKILL)
    finally:
        example.kill_all(processes)
    return processes


@pytest.fixture(scope="module")
def example():
    assert "xla" in engine.ENGINES  # the fused engine is registered
    return _load_example()


def _folder():
    # Not pytest's tmp_path: on a machine shared by several pytest sessions,
    # their clean-up of old base folders can remove it while workers write.
    return tempfile.mkdtemp(prefix="keras_feedback_distribute_")


@pytest.fixture
def out():
    folder = _folder()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def uninterrupted(example):
    """A whole 2-worker run: results of worker 0 (chief) and worker 1."""
    folder = _folder()
    try:
        _run_workers(example, folder, example.distribute.local_cluster(2))
        results = _results(folder)
        yield results
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.timeout(200)
def test_two_workers_reach_the_weights_of_one_device(example, uninterrupted, out):
    args = example.parse_args(ARGV + ["--out", out, "--single-device"])
    example.train(args, tf.distribute.get_strategy())
    (single,) = _results(out, tasks=("local-0",))
    assert single["replicas"] == 1 and single["iterations"] == EPOCHS * STEPS
    keras.utils.set_random_seed(args.seed)  # as train() does before building
    initial = example.build_model(args).get_weights()
    assert _max_difference(single["weights"], initial) > 1e-3  # it trained
    for i, worker in enumerate(uninterrupted):
        assert worker["strategy"].endswith("MultiWorkerMirroredStrategy")
        assert worker["replicas"] == 2 and worker["per_replica_batch"] == 4
        assert worker["chief"] == (i == 0)
        assert worker["iterations"] == EPOCHS * STEPS
        assert _max_difference(worker["weights"], single["weights"]) < 1e-5
        np.testing.assert_allclose(worker["loss"], single["loss"], rtol=1e-5)
    chief, other = uninterrupted
    assert _max_difference(chief["weights"], other["weights"]) == 0
    saved = keras.saving.load_model(chief["model"])
    assert _max_difference(saved.get_weights(), single["weights"]) < 1e-5


@pytest.mark.timeout(240)
def test_worker_killed_mid_epoch_resumes_from_backup(example, uninterrupted, out):
    configs = example.distribute.local_cluster(2)
    marker = os.path.join(out, example.PAUSED)
    pause = ("--pause-at-step", str(KILL_AT), "--pause-task", "1")
    killed = _run_workers(example, out, configs, pause, until=marker)
    assert killed[1].returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(out, "worker-0", "result.json"))

    # What the restart will load: the checkpoint of the last whole epoch,
    # readable, in every worker's folder.
    done_epochs = KILL_AT // STEPS
    args = example.parse_args(ARGV + ["--out", out])
    backups = os.path.join(out, "backup")
    assert sorted(os.listdir(backups)) == ["worker-0", "worker-1"]
    for task in ("worker-0", "worker-1"):
        folder = os.path.join(backups, task)
        with open(os.path.join(folder, "training_metadata.json")) as f:
            assert json.load(f)["epoch"] == done_epochs
        model = example.build_model(args)
        model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(folder, "latest.weights.h5"))
        assert int(model.optimizer.iterations.numpy()) == done_epochs * STEPS
        assert all(np.isfinite(w).all() for w in model.get_weights())

    _run_workers(example, out, configs)  # the same cluster, started again
    for worker, reference in zip(_results(out), uninterrupted):
        assert worker["iterations"] == reference["iterations"] == EPOCHS * STEPS
        assert worker["epochs_run"] == EPOCHS - done_epochs  # resumed
        np.testing.assert_allclose(worker["loss"][-1], reference["loss"][-1], rtol=1e-5)
        assert _max_difference(worker["weights"], reference["weights"]) < 1e-5
    # Keras deletes each worker's backup when training completes.
    assert os.listdir(backups) == []
