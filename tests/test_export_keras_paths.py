"""Keras's own export paths on models of our layers: ``model.export`` in both
formats and ``tf.lite.TFLiteConverter.from_keras_model``.

Traced there, outside any tape, eager call or strategy ``run``, the
``"auto"`` engine is the reference loop: the SavedModel holds no XLA op and
no must-compile function, the LiteRT file builtin ops only. Keras's own
``fit`` and ``predict`` keep the fused engine.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from keras_feedback import engine as engines
from keras_feedback.export import litert_ops
from keras_feedback.layers import ConvFeedback2D
from keras_feedback.layers import Feedback

TOLERANCE = 1e-5
# (batch, time) of the LiteRT checks: two batch sizes, two lengths.
SHAPES = ((1, 3), (3, 7))


def stacked_model():
    inputs = keras.Input((None, 3))
    h = Feedback(4, core="gru", attention=True, return_sequences=True)(inputs)
    h = Feedback(5, core="lstm", residual=True, output_units=3, return_sequences=True)(
        h
    )
    return keras.Model(inputs, keras.layers.Dense(2)(h))


def conv_model():
    inputs = keras.Input((None, 5, 5, 2))
    h = ConvFeedback2D(3, 3, padding="same", return_sequences=True)(inputs)
    return keras.Model(inputs, h)


MODELS = {"stacked": stacked_model, "conv": conv_model}


def sequences(model, batch, steps, seed=0):
    shape = (batch, steps) + tuple(model.inputs[0].shape[2:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every model exported by the three Keras paths (one build each)."""
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("keras_paths")
    result = {}
    for name, build in MODELS.items():
        model = build()
        saved = str(root / f"{name}_saved")
        model.export(saved, format="tf_saved_model", verbose=False)
        lite = str(root / f"{name}.tflite")
        model.export(lite, format="litert", verbose=False)
        converted = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        result[name] = (model, saved, {"export": lite, "converter": converted})
    return result


def _functions(saved):
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    graph = proto.meta_graphs[0].graph_def
    return [graph.node] + [f.node_def for f in graph.library.function], graph


@pytest.mark.parametrize("name", sorted(MODELS))
def test_saved_model_has_no_xla(exported, name):
    _, saved, _ = exported[name]
    bodies, graph = _functions(saved)
    ops = {node.op for body in bodies for node in body}
    assert "While" in ops or "StatelessWhile" in ops, sorted(ops)
    assert not [op for op in ops if op.startswith("Xla")], sorted(ops)
    must_compile = [
        f.signature.name for f in graph.library.function if "_XlaMustCompile" in f.attr
    ]
    must_compile += [
        node.name for body in bodies for node in body if "_XlaMustCompile" in node.attr
    ]
    assert not must_compile


RELOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    requests = json.loads(sys.argv[1])
    for saved, (inputs, outputs) in requests.items():
        loaded = tf.saved_model.load(saved)
        np.save(outputs, loaded.serve(tf.constant(np.load(inputs))).numpy())
    """
)


def test_saved_model_reloaded_in_a_fresh_process(exported, tmp_path):
    requests, expected = {}, {}
    for name, (model, saved, _) in exported.items():
        x = sequences(model, 3, 6)
        np.save(tmp_path / f"{name}_x.npy", x)
        requests[saved] = (str(tmp_path / f"{name}_x.npy"), str(tmp_path / name))
        expected[name] = np.asarray(model(x))
    subprocess.run(
        [sys.executable, "-c", RELOAD, json.dumps(requests)],
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    for name in exported:
        served = np.load(tmp_path / f"{name}.npy")
        np.testing.assert_allclose(served, expected[name], atol=TOLERANCE)


def _run_litert(content, x):
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(content, bytes):
        interpreter = Interpreter(model_content=content)
    else:
        interpreter = Interpreter(model_path=content)
    (given,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(given["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], x)
    interpreter.invoke()
    (output,) = interpreter.get_output_details()
    return interpreter.get_tensor(output["index"])


@pytest.mark.parametrize("path", ["export", "converter"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_litert_builtin_ops_and_parity(exported, name, path):
    model, _, files = exported[name]
    ops = litert_ops(files[path])
    assert "WHILE" in ops
    assert all(op.isupper() and "FLEX" not in op for op in ops), ops
    for batch, steps in SHAPES:
        x = sequences(model, batch, steps, seed=batch)
        np.testing.assert_allclose(
            _run_litert(files[path], x), np.asarray(model(x)), atol=TOLERANCE
        )


def test_fit_predict_and_tapes_keep_the_fused_engine(monkeypatch):
    """Keras's own steps (fit, predict: inside a strategy ``run``; evaluate
    runs there too), eager calls and gradient tapes run the fused engine; a graph
    traced for export (nothing recording, no strategy ``run``) the
    reference one."""
    ran = []
    for key, function in list(engines.ENGINES.items()):

        def spy(*args, _function=function, _key=key, **kwargs):
            ran.append(_key)
            return _function(*args, **kwargs)

        monkeypatch.setitem(engines.ENGINES, key, spy)
    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, Feedback(4, return_sequences=True)(inputs))
    model.compile("sgd", "mse")
    x = sequences(model, 4, 5)
    y = np.zeros((4, 5, 4), "float32")
    model.fit(x, y, epochs=1, verbose=0)
    model.predict(x, verbose=0)
    model(x)

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    train_step(tf.constant(x))
    assert ran and set(ran) == {"xla"}, ran
    del ran[:]

    @tf.function(input_signature=[tf.TensorSpec((None, None, 3))])
    def serve(x):
        return model(x)

    serve.get_concrete_function()
    assert ran == ["reference"], ran
