"""The fused engine under ``tf.distribute.MirroredStrategy`` (2 logical CPUs).

Logical devices must be configured before TensorFlow initialises its devices,
which the shared test process has long done: each check runs in a fresh
Python process and reports its figures as JSON.
"""

import json
import subprocess
import sys

import pytest

_PRELUDE = """
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)
import keras
import numpy as np
import keras_feedback

rng = np.random.default_rng(0)
x = rng.standard_normal((8, 7, 3)).astype("float32")
y = rng.standard_normal((8, 4)).astype("float32")

def make_model(engine="xla"):
    keras.utils.set_random_seed(1)
    layer = keras_feedback.layers.Feedback(
        4, feedback_units=2, core="gru", attention=True, engine=engine
    )
    return keras.Sequential([keras.Input((7, 3)), layer])

initial = make_model().get_weights()
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
one_device = tf.distribute.OneDeviceStrategy("/cpu:0")

def max_difference(a, b):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a, b))
"""


_CHECKS = """
def fit(strategy):
    with strategy.scope():
        model = make_model()
        model.set_weights(initial)
        model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(x, y, batch_size=8, epochs=5, shuffle=False, verbose=0)
    return model.get_weights()


def custom_loop(strategy, engine):
    with strategy.scope():
        model = make_model(engine)
        model.set_weights(initial)
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=True)
    def gradients(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(xb, training=True) - yb) ** 2)
            loss = loss / strategy.num_replicas_in_sync
        return tape.gradient(loss, model.trainable_variables)

    def replica_step(xb, yb):
        optimizer.apply_gradients(zip(gradients(xb, yb), model.trainable_variables))

    @tf.function
    def step(xb, yb):
        strategy.run(replica_step, args=(xb, yb))

    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    data = strategy.experimental_distribute_dataset(data)
    for _ in range(5):
        for xb, yb in data:
            step(xb, yb)
    return model.get_weights()


fit_mirrored, fit_one = fit(mirrored), fit(one_device)
# Same loss, optimizer and data as ``fit``: compared with one-device ``fit``.
loop_mirrored = custom_loop(mirrored, "xla")
try:
    custom_loop(mirrored, "reference")
    reference_error = ""
except Exception as error:
    reference_error = type(error).__name__ + ": " + str(error)[:3000]
print(json.dumps(dict(
    replicas=mirrored.num_replicas_in_sync,
    fit_difference=max_difference(fit_mirrored, fit_one),
    fit_moved=max_difference(fit_mirrored, initial),
    loop_difference=max_difference(loop_mirrored, fit_one),
    loop_moved=max_difference(loop_mirrored, initial),
    reference_error=reference_error,
)))
"""


@pytest.fixture(scope="module")
def figures():
    """Runs every check in one fresh process (one TensorFlow start-up)."""
    done = subprocess.run(
        [sys.executable, "-c", _PRELUDE + _CHECKS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fit_under_mirrored_strategy_equals_one_device(figures):
    """``model.fit``, 5 SGD steps, global batch 8 (4 per replica) == one device.

    Keras compiles the step without XLA under a strategy; the layer's own
    loops stay XLA-compiled inside each replica.
    """
    assert figures["replicas"] == 2
    assert figures["fit_moved"] > 1e-3
    assert figures["fit_difference"] <= 1e-5, figures


def test_jit_compiled_replica_step_trains_like_one_device(figures):
    """A per-replica ``jit_compile=True`` train step under MirroredStrategy.

    The fused engine compiles inside each replica's XLA cluster and trains
    as ``fit`` does on one device; the reference engine's autodiff through its
    ``tf.while_loop`` does not compile there (TensorList accumulators).
    """
    assert figures["loop_moved"] > 1e-3
    assert figures["loop_difference"] <= 1e-5, figures
    assert "fixed tensor list size" in figures["reference_error"], figures
