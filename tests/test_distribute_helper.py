"""keras_feedback.training.distribute: strategy selection and bad configuration.

Every bad configuration must raise a ValueError that names what is wrong
before any server starts (no hang); the multi-worker runs themselves are in
``test_distribute_multiworker.py``.
"""

import json
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from keras_feedback.training import distribute

pytestmark = pytest.mark.timeout(60)


def _config(cluster=None, task=None):
    cluster = cluster or {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}
    task = task or {"type": "worker", "index": 1}
    return {"cluster": cluster, "task": task}


def test_parse_tf_config_keeps_cluster_and_task():
    value = dict(_config(), environment="cloud", rpc_layer="grpc")
    assert distribute.parse_tf_config(json.dumps(value)) == _config()
    assert distribute.parse_tf_config(value) == _config()


BAD_TF_CONFIGS = [
    ("not_json", "{'cluster': 1", "not valid JSON"),
    ("not_an_object", "[1, 2]", "must be a JSON object"),
    ("no_cluster", json.dumps({"task": {"type": "worker", "index": 0}}),
     "needs a 'cluster' object"),
    ("no_task", json.dumps({"cluster": {"worker": ["a:1"]}}),
     "needs a 'task' object"),
    ("ps_job", json.dumps(_config({"worker": ["a:1"], "ps": ["b:2"]})),
     "got cluster jobs ['ps', 'worker']"),
    ("address_without_port", json.dumps(_config({"worker": ["a:1", "hostb"]})),
     "cluster['worker'][1] must be a 'host:port' string, got 'hostb'"),
    ("port_out_of_range", json.dumps(_config({"worker": ["a:1", "b:70000"]})),
     "got 'b:70000'"),
    ("empty_job", json.dumps(_config({"worker": []})), "non-empty list"),
    ("same_address_twice", json.dumps(_config({"worker": ["a:1", "a:1"]})),
     "'a:1' appears twice"),
    ("two_chiefs", json.dumps(_config({"chief": ["a:1", "b:1"], "worker": ["c:1"]})),
     "at most one chief"),
    ("task_type_not_in_cluster",
     json.dumps(_config(task={"type": "chief", "index": 0})),
     "task['type'] must be one of the cluster's jobs ['worker'], got 'chief'"),
    ("index_out_of_range", json.dumps(_config(task={"type": "worker", "index": 2})),
     "task['index'] must be in 0..1 (cluster['worker'] has 2 address(es)), got 2"),
    ("index_not_int", json.dumps(_config(task={"type": "worker", "index": "1"})),
     "task['index'] must be an integer, got '1'"),
]  # fmt: skip


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "value,message", [c[1:] for c in BAD_TF_CONFIGS], ids=[c[0] for c in BAD_TF_CONFIGS]
)
def test_malformed_tf_config_is_a_clear_error(value, message):
    with pytest.raises(ValueError) as error:
        distribute.strategy_from_environment({"TF_CONFIG": value})
    assert message in str(error.value)
    assert "TF_CONFIG" in str(error.value)


def test_train_command_distributed_reports_a_bad_tf_config(
    tmp_path, monkeypatch, capsys
):
    from keras_feedback import cli

    model = tmp_path / "model.json"
    model.write_text(json.dumps({"feedback": {"units": 4}}))
    monkeypatch.setenv("TF_CONFIG", json.dumps(_config(task={"type": "worker"})))
    code = cli.main(
        [
            "train",
            "--distributed",
            "--dataset",
            "adding_problem/T50",
            "--model",
            str(model),
            "--data-dir",
            str(tmp_path / "none"),
        ]
    )
    assert code == 2
    assert "task['index'] must be an integer, got None" in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_port_in_use_is_a_clear_error():
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        value = _config(
            {"worker": [f"127.0.0.1:{port}", "127.0.0.1:1"]},
            {"type": "worker", "index": 0},
        )
        with pytest.raises(ValueError) as error:
            distribute.strategy_from_environment({"TF_CONFIG": json.dumps(value)})
    finally:
        holder.close()
    assert f"port {port} of this task (worker 0" in str(error.value)
    assert "already in use" in str(error.value)


def test_local_cluster_gives_valid_distinct_free_ports():
    configs = distribute.local_cluster(3)
    assert [c["task"] for c in configs] == [
        {"type": "worker", "index": i} for i in range(3)
    ]
    for config in configs:
        assert distribute.parse_tf_config(json.dumps(config)) == config
    ports = [int(a.rsplit(":", 1)[1]) for a in configs[0]["cluster"]["worker"]]
    assert len(set(ports)) == 3
    for port in ports:  # still free: a worker can listen on it
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.bind(("127.0.0.1", port))
        probe.close()
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=f"num_workers .* got {bad!r}"):
            distribute.local_cluster(bad)


def test_one_device_gets_the_default_strategy():
    expected_devices = tf.config.list_logical_devices("CPU")
    for environ in ({}, {"TF_CONFIG": "  "}):  # unset or blank: no cluster
        strategy = distribute.strategy_from_environment(environ)
        if len(expected_devices) == 1:  # this process's devices, not configured
            assert strategy is tf.distribute.get_strategy()
        else:
            assert isinstance(strategy, tf.distribute.MirroredStrategy)
        assert strategy.num_replicas_in_sync == len(expected_devices)
        assert distribute.is_chief(strategy)


def test_per_replica_batch_size_checks_its_argument():
    strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    assert distribute.per_replica_batch_size(6 * replicas) == 6
    for bad in (0, -4, 8.0, True, "8"):
        with pytest.raises(ValueError, match="global_batch_size must be a positive"):
            distribute.per_replica_batch_size(bad, strategy)


def _fake_strategy(cluster, task_type, task_id):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
    )
    return types.SimpleNamespace(cluster_resolver=resolver)


def test_chief_and_backup_folder_of_each_task(tmp_path):
    with_chief = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    workers = {"worker": ["b:1", "c:1"]}
    cases = [
        (with_chief, "chief", 0, True),
        (with_chief, "worker", 0, False),
        (workers, "worker", 0, True),
        (workers, "worker", 1, False),
    ]
    for cluster, task_type, task_id, chief in cases:
        strategy = _fake_strategy(cluster, task_type, task_id)
        assert distribute.is_chief(strategy) is chief, (cluster, task_type, task_id)
        callback = distribute.backup_and_restore(tmp_path, strategy)
        assert callback.backup_dir == str(tmp_path / f"{task_type}-{task_id}")
        assert callback.save_freq == "epoch" and callback.double_checkpoint


def test_save_model_keeps_only_the_chiefs_file(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    chief = _fake_strategy({"worker": ["b:1", "c:1"]}, "worker", 0)
    other = _fake_strategy({"worker": ["b:1", "c:1"]}, "worker", 1)
    assert distribute.save_model(model, tmp_path / "other.keras", other) is None
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / "chief.keras"
    assert distribute.save_model(model, path, chief) == path
    loaded = keras.saving.load_model(path)
    x = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )


def test_shard_by_data_sets_the_policy_and_keeps_the_elements():
    dataset = tf.data.Dataset.range(10).batch(4)
    sharded = distribute.shard_by_data(dataset)
    policy = sharded.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA
    assert [b.tolist() for b in sharded.as_numpy_iterator()] == [
        b.tolist() for b in dataset.as_numpy_iterator()
    ]


# Logical devices must be configured before TensorFlow starts: a fresh process.
_MIRRORED = """
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_feedback.training import distribute
strategy = distribute.strategy_from_environment({})
try:
    distribute.per_replica_batch_size(5, strategy)
    error = None
except ValueError as e:
    error = str(e)
print(json.dumps(dict(
    kind=type(strategy).__name__,
    replicas=strategy.num_replicas_in_sync,
    devices=list(strategy.extended.worker_devices),
    per_replica=distribute.per_replica_batch_size(6, strategy),
    chief=distribute.is_chief(strategy),
    error=error,
)))
"""


@pytest.mark.timeout(120)
def test_two_local_devices_get_mirrored_strategy_and_an_even_batch():
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["kind"] == "MirroredStrategy"
    assert report["replicas"] == 2
    assert [d.rsplit("/", 1)[1] for d in report["devices"]] == [
        "device:CPU:0",
        "device:CPU:1",
    ]
    assert report["per_replica"] == 3 and report["chief"]
    assert report["error"] == (
        "global_batch_size=5 is not divisible by the number of replicas (2); "
        "use a multiple of 2, e.g. 4"
    )
