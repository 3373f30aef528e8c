"""Quantization-aware training (keras_feedback.quantization).

- The fake quantisation against a numpy reference of TensorFlow's
  FakeQuant arithmetic (nudged range, rounding) and of its straight-through
  gradient.
- The fake-quantised step in Keras against the int8 LiteRT step model it
  exports, one step at a time from the same states, within two
  quantisation steps of each output (a small matrix of cores x attention x
  residual x output units, and a Dense layer after): the QAT model
  predicts what the phone computes; every arithmetic op of the file is int8.
- QAT training: both engines' losses and gradients agree within 1e-6; the
  ranges move as ``update_ranges`` says; ``.keras``, config, ``strip``; the
  errors.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from keras_feedback import cores
from keras_feedback import engine
from keras_feedback import export
from keras_feedback import layers
from keras_feedback import quantization
from keras_feedback.cells import _fake_quant
from keras_feedback.export import _trace

FEATURES = 3


def numpy_fake_quant(x, low, high, bits=8, narrow=False):
    """TensorFlow's FakeQuantWithMinMaxVars in numpy: the range nudged so
    that zero is on the grid, values clamped and rounded half up; and its
    gradient: 1 inside the nudged range, 0 outside."""
    quant_min, quant_max = (1 if narrow else 0), 2**bits - 1
    scale = (high - low) / (quant_max - quant_min)
    zero_from_min = quant_min - low / scale
    zero = np.round(np.clip(zero_from_min, quant_min, quant_max))
    nudged_low = (quant_min - zero) * scale
    nudged_high = (quant_max - zero) * scale
    clamped = np.clip(x, nudged_low, nudged_high)
    rounded = np.floor((clamped - nudged_low) / scale + 0.5) * scale + nudged_low
    gradient = ((x >= nudged_low) & (x <= nudged_high)).astype(x.dtype)
    return rounded, gradient


@pytest.mark.parametrize("bounds", [(-2.3, 2.7), (0.0, 255 / 256), (-0.31, 0.52)])
def test_fake_quant_matches_numpy_and_its_gradient_is_straight_through(bounds):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000,)).astype(np.float32) * 2
    upstream = rng.normal(size=x.shape).astype(np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = _fake_quant.fake_quant(xt, tf.constant(bounds, tf.float32))
    grad = tape.gradient(y, xt, output_gradients=tf.constant(upstream))
    expected, mask = numpy_fake_quant(x, *bounds)
    step = (bounds[1] - bounds[0]) / 255
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-6 * step + 1e-7)
    np.testing.assert_array_equal(grad.numpy(), upstream * mask)
    assert 0 < mask.mean() < 1  # both sides of the range are exercised


def test_weight_grid_is_symmetric_narrow_and_straight_through():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(5, 7)).astype(np.float32)
    bound = np.abs(w).max()
    wt = tf.constant(w)
    with tf.GradientTape() as tape:
        tape.watch(wt)
        q = _fake_quant.fake_quant_weight(wt)
    grad = tape.gradient(q, wt)
    expected, _ = numpy_fake_quant(w, -bound, bound, narrow=True)
    np.testing.assert_allclose(q.numpy(), expected, atol=1e-6)
    # 255 levels, symmetric: the grid is k * bound / 127.
    levels = np.round(q.numpy() / (bound / 127))
    np.testing.assert_allclose(q.numpy(), levels * bound / 127, atol=1e-6)
    assert np.abs(levels).max() == 127
    # The range is not differentiated: every weight gets its own gradient 1.
    np.testing.assert_array_equal(grad.numpy(), np.ones_like(w))


# cores x attention x residual x output units, and a Dense after (a pairwise
# cover of the options).
MATRIX = [
    ("simple", False, False, None, False),
    ("gru", True, False, 3, False),
    ("gru_cho", False, True, None, True),
    ("lstm", True, True, 3, True),
    ("lstm", False, False, None, False),
    ("indrnn", True, False, 3, False),
]


def _core(name):
    return cores.GRUCore(reset_after=False) if name == "gru_cho" else name


def _model(core, attention, residual, output_units, dense, seed=0, **options):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, FEATURES), name="x")
    layer = layers.Feedback(
        6,
        feedback_units=3,
        core=_core(core),
        attention=attention,
        residual=residual,
        output_units=output_units,
        return_sequences=True,
        name="feedback",
        **options,
    )
    outputs = layer(inputs)
    if dense:
        outputs = keras.layers.Dense(2, name="y")(outputs)
    return keras.Model(inputs, outputs)


def _data(seed, batch=8, time=10):
    return (
        np.random.default_rng(seed)
        .normal(size=(batch, time, FEATURES))
        .astype(np.float32)
    )


def _widened(low, high):
    """The range ``merge`` makes of what was seen: holding 0, widened by
    ``RANGE_MARGIN`` of its width on each side that is not 0."""
    low, high = np.minimum(low, 0), np.maximum(high, 0)
    margin = _fake_quant.RANGE_MARGIN * (high - low)
    return np.stack([np.where(low < 0, low - margin, low), high + margin], -1)


def _output_scales(interpreter):
    """Output name -> the scale of the int8 tensor its DEQUANTIZE reads."""
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    dequantized = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] == "DEQUANTIZE":
            dequantized[op["outputs"][0]] = details[op["inputs"][0]]["quantization"][0]
    runner = interpreter.get_signature_runner("step")
    return {
        name: dequantized[d["index"]] for name, d in runner.get_output_details().items()
    }


ARITHMETIC = ("FULLY_CONNECTED", "ADD", "SUB", "MUL", "LOGISTIC", "TANH")


@pytest.mark.parametrize(
    "core,attention,residual,output_units,dense",
    MATRIX,
    ids=["-".join(map(str, case)) for case in MATRIX],
)
def test_keras_step_predicts_the_int8_file_within_two_steps(
    tmp_path, core, attention, residual, output_units, dense
):
    model = _model(core, attention, residual, output_units, dense)
    qat = quantization.quantize_model(model, _data(0))
    path = export.export_litert(
        qat, tmp_path / "step.tflite", quantization="int8", streaming=True
    )
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    for op in ops:
        if op["op_name"] in ARITHMETIC:
            dtypes = {details[i]["dtype"] for i in op["outputs"]}
            assert dtypes == {np.int8}, (op["op_name"], dtypes)
    scales = _output_scales(interpreter)
    runner = interpreter.get_signature_runner("step")
    plan = _trace.ExportPlan(qat)
    step = tf.function(plan.step_fn, input_signature=plan.signature("step"))
    x = _data(1)
    states = {
        name: np.asarray(value)
        for name, value in plan.initial_state_fn({_trace.BATCH_SIZE: len(x)}).items()
    }
    worst = 0.0
    for t in range(x.shape[1]):
        feed = {"x": x[:, t], **states}
        expected = {k: v.numpy() for k, v in step(feed).items()}
        got = runner(**feed)
        for name, value in expected.items():
            steps = np.abs(got[name] - value).max() / scales[name]
            worst = max(worst, steps)
            assert steps <= 2.0 + 1e-3, (t, name, steps)
        # The next step from Keras's states: every step is compared alone.
        states = {name: expected[name] for name in states}
    assert worst >= 0.0


@pytest.mark.parametrize("core", ["gru", "lstm"])
def test_qat_training_agrees_on_both_engines(core):
    x, y = _data(7, batch=4, time=6), _data(3, batch=4, time=6)[..., :2]
    results = {}
    for name in ("xla", "reference"):
        model = _model(core, True, False, 3, True, seed=4, engine=name)
        qat = quantization.quantize_model(model, x)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((qat(x, training=True) - y) ** 2)
        grads = tape.gradient(loss, qat.trainable_variables)
        assert all(g is not None for g in grads)
        results[name] = (float(loss), [g.numpy() for g in grads], qat)
    (loss_a, grads_a, qat_a), (loss_b, grads_b, qat_b) = results.values()
    assert abs(loss_a - loss_b) <= 1e-6 * abs(loss_a)
    for a, b in zip(grads_a, grads_b):
        scale = max(np.abs(a).max(), 1e-3)
        np.testing.assert_allclose(a, b, atol=1e-6 * scale)
    # The fake quantisation changes the gradient (it is not the float one).
    model = _model(core, True, False, 3, True, seed=4)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
    float_grads = tape.gradient(loss, model.trainable_variables)
    assert max(np.abs(a - g.numpy()).max() for a, g in zip(grads_a, float_grads)) > 1e-4


def test_quantize_model_keeps_weights_and_observes_ranges():
    model = _model("gru", True, False, 3, True)
    x = _data(5)
    qat = quantization.quantize_model(model, x)
    assert quantization.is_quantized(qat) and not quantization.is_quantized(model)
    assert isinstance(qat.get_layer("y"), quantization.QATDense)
    copied = {v.path: v for v in qat.weights}
    assert set(copied) - {v.path for v in model.weights} == {
        "feedback/feedback_cell/quantization_ranges",
        "y/quantization_ranges",
    }
    for old in model.weights:
        np.testing.assert_array_equal(old.numpy(), copied[old.path].numpy())
    cell = qat.get_layer("feedback").cell
    ranges = cell.quantization_ranges.numpy()
    quant = cell.spec.quantization
    assert ranges.shape == (quant.points, 2)
    # The input's range is the data's (holding 0); fixed ranges are LiteRT's.
    np.testing.assert_allclose(ranges[0], _widened(x.min(), x.max()), rtol=1e-6)
    for i, kind in enumerate(quant.kinds):
        if kind == "Sigmoid":
            np.testing.assert_array_equal(ranges[2 + i], [0, 255 / 256])
        if kind == "Tanh":
            np.testing.assert_array_equal(ranges[2 + i], [-1, 127 / 128])
    dense = qat.get_layer("y").quantization_ranges.numpy()
    # The Dense layer's input: the quantised Feedback layer's output.
    hidden = keras.Model(qat.inputs, qat.get_layer("feedback").output)(x)
    np.testing.assert_allclose(
        dense[0], _widened(hidden.numpy().min(), hidden.numpy().max()), rtol=1e-6
    )
    # Close to the float model, not equal to it.
    difference = np.abs(qat(x).numpy() - model(x).numpy()).max()
    assert 0 < difference < 0.1
    # strip: the float model back, the same weights.
    stripped = quantization.strip(qat)
    assert not quantization.is_quantized(stripped)
    np.testing.assert_allclose(stripped(x).numpy(), model(x).numpy(), atol=1e-6)


def test_update_ranges_is_a_moving_average():
    model = _model("lstm", False, False, None, True)
    x = _data(6)
    qat = quantization.quantize_model(model, x)
    cell = qat.get_layer("feedback").cell
    variable = cell.quantization_ranges
    old = variable.numpy()
    wider = 3 * _data(7)
    # The first quantised layer's inputs do not depend on any range update.
    layer, low, high = next(quantization._qat._observed(qat, wider, True))
    assert layer.name == "feedback"
    quantization.update_ranges(qat, wider, momentum=0.75)
    expected = old.copy()
    rows = cell.spec.quantization.observed_rows()
    expected[rows] = 0.75 * old[rows] + 0.25 * _widened(low, high)[rows]
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert np.abs(variable.numpy() - old).max() > 0.1  # the wider data moved them
    with pytest.raises(ValueError, match="momentum"):
        quantization.update_ranges(qat, x, momentum=1.0)
    with pytest.raises(ValueError, match="no quantization-aware layer"):
        quantization.update_ranges(model, x)


def test_qat_model_saves_fits_and_exports_without_calibration(tmp_path):
    model = _model("gru", False, False, None, True)
    x, y = _data(8), _data(9)[..., :2]
    qat = quantization.quantize_model(model, x)
    qat.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    callback = quantization.UpdateRanges(x, every=2)
    before = qat.get_layer("feedback").cell.quantization_ranges.numpy()
    qat.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[callback])
    after = qat.get_layer("feedback").cell.quantization_ranges.numpy()
    assert not np.array_equal(before, after)  # two updates moved them
    path = tmp_path / "qat.keras"
    qat.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("feedback").get_config()["quantization"] == "int8"
    np.testing.assert_allclose(loaded(x).numpy(), qat(x).numpy(), atol=1e-6)
    tflite = export.export_litert(
        loaded, tmp_path / "m.tflite", quantization="int8", streaming=True
    )
    report = export.verify_litert(loaded, tflite, x, tolerance=0.1)
    assert report["within_tolerance"]
    assert report["float_error"]["max_rel_error"] > report["max_rel_error"]


def test_representative_data_only_checks_the_ranges(tmp_path):
    model = _model("simple", False, False, None, False)
    qat = quantization.quantize_model(model, _data(10))
    ranges = qat.get_layer("feedback").cell.quantization_ranges.numpy()
    export.export_litert(
        qat,
        tmp_path / "a.tflite",
        quantization="int8",
        streaming=True,
        representative_data=_data(11),
    )
    with pytest.warns(UserWarning, match="beyond the int8 ranges"):
        export.export_litert(
            qat,
            tmp_path / "b.tflite",
            quantization="int8",
            streaming=True,
            representative_data=20 * _data(11),
        )
    # Never recalibrated.
    np.testing.assert_array_equal(
        qat.get_layer("feedback").cell.quantization_ranges.numpy(), ranges
    )


@pytest.mark.parametrize(
    "options,match",
    [
        ({"quantization": "int4"}, "must be None or one of"),
        ({"quantization": "int8", "layer_norm": True}, "layer_norm=True"),
        ({"quantization": "int8", "activation": "gelu"}, "activation='gelu'"),
        (
            {"quantization": "int8", "core": keras.layers.GRUCell(4)},
            "a user core or a Keras cell",
        ),
    ],
)
def test_feedback_refuses_what_qat_cannot_model(options, match):
    options = {"units": 4, **options}
    with pytest.raises(ValueError, match=match):
        layers.Feedback(**options)


def test_quantize_model_and_export_errors(tmp_path):
    x = _data(12)
    inputs = keras.Input((None, FEATURES))
    hidden = keras.layers.Conv1D(3, 2, padding="same", name="conv")(inputs)
    conv_model = keras.Model(inputs, layers.Feedback(4)(hidden))
    with pytest.raises(ValueError, match="layer 'conv' \\(Conv1D\\) has no"):
        quantization.quantize_model(conv_model, x)
    with pytest.raises(TypeError, match="must be a keras.Model"):
        quantization.quantize_model(layers.Feedback(4), x)
    qat = quantization.quantize_model(_model("gru", False, False, None, True), x)
    with pytest.raises(ValueError, match="pass quantization='int8'"):
        export.export_litert(qat, tmp_path / "a.tflite", streaming=True)
    with pytest.raises(ValueError, match="pass streaming=True"):
        export.export_litert(qat, tmp_path / "b.tflite", quantization="int8")
    assert not os.listdir(tmp_path)
    # Quantising a QAT model again would observe its ranges anew in float.
    with pytest.raises(ValueError, match="is quantization-aware already"):
        quantization.quantize_model(qat, x)
    ranges = [v.numpy() for v in qat.weights if "quantization_ranges" in v.path]
    again = quantization.quantize_model(quantization.strip(qat), x)
    for old, new in zip(
        ranges, [v.numpy() for v in again.weights if "quantization_ranges" in v.path]
    ):
        np.testing.assert_array_equal(old, new)
    with pytest.raises(ValueError, match="needs float32"):
        layers.Feedback(4, quantization="int8", dtype="mixed_float16")(
            keras.Input((None, 3))
        )


def _cli(argv, capsys):
    from keras_feedback import cli

    try:
        code = cli.main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_trains_with_qat_and_exports_int8_without_calibration(
    tmp_path_factory, tmp_path, capsys
):
    # The same data folder as tests/test_cli.py's: the task is generated once.
    data_dir = tmp_path_factory.getbasetemp() / "keras_feedback_tfds"
    data_dir.mkdir(exist_ok=True)
    config = {"feedback": {"units": 4, "feedback_units": 2}, "learning_rate": 0.01}
    model_file = tmp_path / "model.json"
    model_file.write_text(json.dumps(config))
    out = tmp_path / "trained"
    argv = [
        "train",
        "--dataset",
        "adding_problem/T50",
        "--data-dir",
        str(data_dir),
        "--model",
        str(model_file),
        "--train-split",
        "validation[:64]",
        "--eval-split",
        "test[:32]",
        "--out",
        str(out),
        "--batch-size",
        "32",
    ]
    code, _, err = _cli([*argv, "--qat-epochs", "1", "--distributed"], capsys)
    assert code == 2 and "--qat-epochs" in err and "--distributed" in err
    # The command's path, not an engine's (the engines agree above): the
    # reference loop, without XLA's compile time.
    with engine.scope("reference"):
        code, stdout, err = _cli([*argv, "--qat-epochs", "1"], capsys)
    assert code == 0, err
    assert "quantization-aware, int8 rounding" in stdout
    qat = keras.models.load_model(out / "model_qat.keras")
    assert quantization.is_quantized(qat)
    float_model = keras.models.load_model(out / "model.keras")
    assert not quantization.is_quantized(float_model)
    litert = str(tmp_path / "qat.tflite")
    export_argv = ["export", str(out / "model_qat.keras"), "--litert", litert]
    code, _, err = _cli([*export_argv, "--quantize", "int8"], capsys)
    assert code == 2 and "--streaming" in err and err.count("\n") == 1
    assert not os.path.exists(litert)
    code, stdout, err = _cli(
        [*export_argv, "--quantize", "int8", "--streaming"], capsys
    )
    assert code == 0, err
    assert "int8 vs float model" in stdout
    assert "FULLY_CONNECTED" in export.litert_ops(litert)
