"""The fused XLA engine against the reference engine (its oracle).

The reference engine is a plain ``tf.while_loop`` differentiated by
TensorFlow; the fused engine has its own compiled backward pass. Both run the
same step function, so outputs and gradients must agree to float32 rounding.
"""

import functools
import itertools

import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_covers_every_pair

import keras_feedback
from keras_feedback import engine as engines
from keras_feedback.cells import _feedback_math as math
from keras_feedback.engine import _reference
from keras_feedback.engine import _xla
from keras_feedback.engine import _xla_layouts
from keras_feedback.engine import _xla_reverse
from keras_feedback.engine import _xla_shards
from keras_feedback.engine import _xla_windows

Feedback = keras_feedback.layers.Feedback
FeedbackCell = keras_feedback.layers.FeedbackCell
CORES = ("simple", "gru", "lstm")
TOLERANCE = 1e-5


def _assert_close(actual, expected, tolerance=TOLERANCE):
    """Max abs error within ``tolerance`` times the magnitude (at least 1)."""
    actual = np.asarray(actual, "float64")
    expected = np.asarray(expected, "float64")
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    error = float(np.max(np.abs(actual - expected), initial=0.0))
    assert error <= tolerance * scale, f"max error {error:.3g} (scale {scale:.3g})"
    return error / scale


def _random_cell(rng, core, units, feedback_units, output_units, **options):
    cell = FeedbackCell(
        units,
        feedback_units=feedback_units,
        core=core,
        output_units=output_units,
        **options,
    )
    cell.build((None, 3))
    cell.set_weights(
        [0.5 * rng.standard_normal(w.shape).astype("float32") for w in cell.weights]
    )
    return cell


def _run_engine(name, cell, params, projected, states, mask, options):
    """Every result of one engine and the gradients of a random weighting."""
    sources = [projected, states, params]
    with tf.GradientTape() as tape:
        tape.watch(tf.nest.flatten(sources))
        outputs, last, final_states, traces = engines.ENGINES[name](
            math.make_recurrence(cell.spec, project=False),
            params,
            projected,
            states,
            mask=mask,
            **options,
        )
        results = [last] + final_states + [traces[k] for k in sorted(traces)]
        if outputs is not None:
            results.append(outputs)
        weights = np.random.default_rng(7)
        loss = sum(
            tf.reduce_sum(r * weights.standard_normal(r.shape).astype("float32"))
            for r in results
        )
    grads = tape.gradient(loss, sources)
    # The reference engine gives None for a parameter the step never uses
    # (the input kernel: the projection happens outside the engine).
    grads = tf.nest.map_structure(
        lambda g, s: tf.zeros_like(s) if g is None else g,
        grads,
        sources,
        check_types=False,
    )
    return results, tf.nest.flatten(grads)


# (core, attention, residual, masked, go_backwards): every pair of values of
# any two of the five options is in some row (a pairwise covering set, checked
# by test_the_combinations_cover_every_pair_of_options); each core runs every
# option both ways. Each row draws two examples of the other arguments
# (derandomized; the first is the simplest, one step of one unit, the second
# a larger one, another in each row), where the full product of the five
# options (48 rows) drew only that first example in every row.
COMBINATIONS = [
    ("simple", False, False, False, False),
    ("simple", True, True, True, True),
    ("gru", False, False, True, True),
    ("gru", True, True, False, False),
    ("lstm", False, True, False, True),
    ("lstm", True, False, True, False),
]


def test_the_combinations_cover_every_pair_of_options():
    options = [CORES, (False, True), (False, True), (False, True), (False, True)]
    assert_covers_every_pair(COMBINATIONS, options)


@pytest.mark.parametrize(
    "core, attention, residual, masked, go_backwards",
    COMBINATIONS,
    ids=[
        f"{c}-att{int(a)}-res{int(r)}-mask{int(m)}-back{int(b)}"
        for c, a, r, m, b in COMBINATIONS
    ],
)
@hypothesis.settings(max_examples=2, deadline=None, derandomize=True)
@hypothesis.given(
    batch=st.integers(1, 3),
    time=st.integers(1, 5),
    units=st.integers(1, 4),
    feedback_units=st.integers(0, 3),
    output_units=st.one_of(st.none(), st.integers(1, 3)),
    layer_norm=st.booleans(),
    return_sequences=st.booleans(),
    zero_output_for_mask=st.booleans(),
    recurrent_mask=st.booleans(),
    traces=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_xla_equals_reference(
    core,
    attention,
    residual,
    masked,
    go_backwards,
    batch,
    time,
    units,
    feedback_units,
    output_units,
    layer_norm,
    return_sequences,
    zero_output_for_mask,
    recurrent_mask,
    traces,
    seed,
):
    rng = np.random.default_rng(seed)
    cell = _random_cell(
        rng,
        core,
        units,
        feedback_units,
        output_units,
        attention=attention,
        residual=residual,
        layer_norm=layer_norm,
    )
    width = cell.spec.gates * units
    projected = tf.constant(rng.standard_normal((batch, time, width)), tf.float32)
    states = [
        tf.constant(rng.standard_normal((batch, size)), tf.float32)
        for size in cell.state_size
    ]
    params = {"weights": cell.step_params()}
    if recurrent_mask:
        params["recurrent_mask"] = tf.constant(
            rng.uniform(0.0, 2.0, (batch, units)), tf.float32
        )
    mask = tf.constant(rng.random((batch, time)) < 0.7) if masked else None
    options = dict(
        go_backwards=go_backwards,
        return_sequences=return_sequences,
        zero_output_for_mask=zero_output_for_mask,
        return_trace=traces,
    )
    expected = _run_engine("reference", cell, params, projected, states, mask, options)
    actual = _run_engine("xla", cell, params, projected, states, mask, options)
    for kind in (0, 1):  # results, then gradients
        assert len(actual[kind]) == len(expected[kind])
        for a, e in zip(actual[kind], expected[kind]):
            _assert_close(a, e)


def _layer_pair(rng, x, **kwargs):
    """The two engines' layers with the same random weights, built for
    ``x``'s shape without a call (a call of the fused one compiles a loop
    the tests do not use)."""
    layers = {e: Feedback(4, engine=e, **kwargs) for e in ("reference", "xla")}
    for layer in layers.values():
        layer.build(x.shape)
    weights = [0.5 * rng.standard_normal(w.shape) for w in layers["reference"].weights]
    for layer in layers.values():
        layer.set_weights([w.astype(layer.weights[0].dtype) for w in weights])
    return layers["reference"], layers["xla"]


def _loss_and_grads(layer, x, **call_kwargs):
    """Output and the gradients of a fixed weighting of it."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, **call_kwargs)
        weights = tf.reshape(
            tf.cos(tf.range(tf.size(y), dtype=tf.float32)), tf.shape(y)
        )
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    sources = [x] + layer.trainable_weights
    grads = tape.gradient(loss, sources)
    # The reference engine gives None for a weight the loss does not reach
    # (with one step, the feedback kernels only shape the unused last c).
    return y, [tf.zeros_like(s) if g is None else g for g, s in zip(grads, sources)]


@pytest.mark.parametrize(
    "policy, tolerance, mode",
    [
        ("mixed_float16", 2e-2, "kept"),
        ("mixed_bfloat16", 1e-1, "kept"),
        # bfloat16 buffers are written as their bits (XLA:CPU would upcast
        # a bfloat16 dynamic-update-slice): by windows too.
        ("mixed_bfloat16", 1e-1, "windows"),
        ("mixed_bfloat16", 1e-1, "recomputed"),
    ],
)
def test_mixed_precision_loop_runs_in_compute_dtype(
    rng, monkeypatch, policy, tolerance, mode
):
    use_mode(monkeypatch, mode)
    keras.config.set_dtype_policy(policy)
    x = tf.constant(rng.standard_normal((3, 6, 5)), tf.float32)
    ref, fused = _layer_pair(
        rng, x, feedback_units=2, core="lstm", attention=True, return_sequences=True
    )
    y_ref, g_ref = _loss_and_grads(ref, x)
    y, g = _loss_and_grads(fused, x)
    assert y.dtype == keras.config.dtype_policy().compute_dtype
    # Variables stay float32; their gradients arrive in float32.
    assert all(v.dtype == "float32" for v in fused.trainable_weights)
    _assert_close(y, y_ref, tolerance)
    for a, e in zip(g, g_ref):
        _assert_close(tf.cast(a, tf.float32), tf.cast(e, tf.float32), tolerance)


def _model(engine, weights=None, **kwargs):
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((None, 3)),
            Feedback(4, feedback_units=2, core="gru", engine=engine, **kwargs),
        ]
    )
    if weights is not None:
        model.set_weights(weights)
    return model


def test_training_inside_model_compile_jit_compile(rng):
    """The fused engine trains inside an XLA-compiled train step.

    Autodiff through the reference engine's loop inside XLA builds TensorList
    accumulators XLA cannot size; the fused engine's own backward pass has
    none. The weights must match a non-jit run of the reference engine.
    """
    x = rng.standard_normal((8, 7, 3)).astype("float32")
    y = rng.standard_normal((8, 4)).astype("float32")
    expected = _model("reference")
    weights = expected.get_weights()
    expected.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=False)
    expected.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    fused = _model("xla", weights)
    fused.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
    assert fused.jit_compile
    fused.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    moved = max(np.max(np.abs(a - b)) for a, b in zip(expected.get_weights(), weights))
    assert moved > 1e-3
    for a, e in zip(fused.get_weights(), expected.get_weights()):
        _assert_close(a, e)


def test_tf_function_with_dynamic_batch_and_time(rng):
    ref, fused = _layer_pair(
        rng, tf.zeros((2, 3, 5)), core="lstm", return_sequences=True
    )
    spec = tf.TensorSpec([None, None, 5], tf.float32)

    @tf.function(input_signature=[spec])
    def grads(x):
        return _loss_and_grads(fused, x)

    for shape in [(2, 3, 5), (4, 9, 5), (1, 1, 5)]:
        x = tf.constant(rng.standard_normal(shape), tf.float32)
        y, g = grads(x)
        y_ref, g_ref = _loss_and_grads(ref, x)
        _assert_close(y, y_ref)
        for a, e in zip(g, g_ref):
            _assert_close(a, e)
    # One trace serves every shape: the shapes reach XLA only at run time.
    assert grads.experimental_get_tracing_count() == 1


def test_stateful_initial_state_and_dropout_match_reference(rng):
    x = tf.constant(rng.standard_normal((2, 4, 3)), tf.float32)
    kwargs = dict(
        core="lstm",
        feedback_units=3,
        stateful=True,
        return_sequences=True,
        dropout=0.3,
        recurrent_dropout=0.4,
        seed=11,
    )
    ref, fused = _layer_pair(rng, x, **kwargs)
    ref.reset_state()  # the states of a stateful layer start at zero
    fused.reset_state()
    for _ in range(2):  # the second batch starts from the first's states
        y_ref, g_ref = _loss_and_grads(ref, x, training=True)
        y, g = _loss_and_grads(fused, x, training=True)
        _assert_close(y, y_ref)
        for a, e in zip(g, g_ref):
            _assert_close(a, e)
        for a, e in zip(fused.states, ref.states):
            _assert_close(a, e)
    initial = [tf.constant(rng.standard_normal((2, s)), tf.float32) for s in (4, 4, 3)]
    plain = {
        e: Feedback(4, feedback_units=3, core="lstm", engine=e)
        for e in ("reference", "xla")
    }
    for layer in plain.values():
        layer(x)
        layer.set_weights(ref.get_weights()[: len(layer.weights)])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(initial)
        outs = {e: layer(x, initial_state=initial) for e, layer in plain.items()}
    _assert_close(outs["xla"], outs["reference"])
    for a, e in zip(
        tape.gradient(outs["xla"], initial), tape.gradient(outs["reference"], initial)
    ):
        _assert_close(a, e)


def test_auto_picks_xla_except_when_unrolled(rng):
    assert engines.resolve("auto") == "xla"
    assert engines.resolve("auto", unroll=True) == "reference"
    assert engines.resolve("reference") == "reference"
    assert engines.get("xla") is engines.ENGINES["xla"]
    x = tf.constant(rng.standard_normal((2, 5, 3)), tf.float32)
    layers = {
        u: Feedback(4, core="gru", unroll=u, return_sequences=True)
        for u in (False, True)
    }
    for layer in layers.values():
        layer(x)
    layers[True].set_weights(layers[False].get_weights())
    _assert_close(layers[True](x), layers[False](x))
    with pytest.raises(ValueError, match="Unknown engine 'fast'"):
        engines.get("fast")


def test_auto_runs_small_calls_on_the_reference_loop(rng, monkeypatch):
    """The size rule: a step below AUTO_MIN_STEP_WORK multiply-adds over a
    short or unknown time axis runs the reference loop (no compilation);
    larger steps or long static sequences the fused engine. Both give the
    same results."""
    monkeypatch.setattr(engines, "AUTO_MIN_STEP_WORK", 32768)
    monkeypatch.setattr(engines, "AUTO_MIN_STEPS", 64)
    small = Feedback(8, core="lstm", feedback_units=0)
    large = Feedback(96, core="lstm", feedback_units=0)
    x = tf.constant(rng.standard_normal((2, 70, 4)), tf.float32)
    small(x), large(x)
    assert small.cell.step_work() == 4 * 8 * (8 + 4) + 4 * 8
    assert large.cell.step_work() >= 32768 > small.cell.step_work()
    chosen = []
    for name in ("xla", "reference"):
        run = engines.ENGINES[name]

        def spy(*args, _run=run, _name=name, **kwargs):
            chosen.append((args[2].shape[1], _name))
            return _run(*args, **kwargs)

        monkeypatch.setitem(engines.ENGINES, name, spy)
    small(x[:, :20]), large(x[:, :20])
    assert chosen == [(20, "reference"), (32, "xla")]  # large: padded to a bucket
    del chosen[:]
    small(x)  # 70 steps: long enough to pay for a compilation
    assert chosen == [(128, "xla")]
    del chosen[:]

    @tf.function(input_signature=[tf.TensorSpec((None, None, 4))])
    def any_length(x):
        with tf.GradientTape() as tape:  # traced as in fit: it runs here
            tape.watch(x)
            y = small(x)
        return y, tape.gradient(y, x)

    y, dx = any_length(x[:, :13])
    assert chosen == [(None, "reference")]
    fused = Feedback(8, core="lstm", feedback_units=0, engine="xla")
    fused(x)
    fused.set_weights(small.get_weights())
    xs = x[:, :13]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        want = fused(xs)
    _assert_close(y, want)
    _assert_close(dx, tape.gradient(want, xs))
    assert engines.choose("xla", x, step_work=1) == "xla"  # only "auto"
    assert engines.choose("auto", x[:, :5], step_work=None) == "xla"  # unknown


def test_auto_runs_bfloat16_on_tensorflow_kernels(rng, monkeypatch):
    """The dtype rule: a call of "auto" in bfloat16 runs the reference loop
    (an inference call one per batch shard, a training call one loop) and
    gives the reference loop's results and gradients (and the fused
    engine's, within bfloat16 rounding); in float32 or with engine="xla"
    the fused engine runs."""
    x = tf.constant(rng.standard_normal((17, 6, 3)), tf.float32)
    mask = np.ones((17, 6), bool)
    mask[3, 4:] = mask[11, 1:3] = False
    layers = {
        name: Feedback(
            5, core="gru", return_sequences=True, dtype="mixed_bfloat16", engine=name
        )
        for name in ("auto", "reference", "xla")
    }
    for layer in layers.values():
        layer.build(x.shape)  # no call: the fused one would compile it
        layer.set_weights(layers["auto"].get_weights())
    calls = []
    for name in ("xla", "reference"):
        run = engines.ENGINES[name]

        def spy(*args, _run=run, _name=name, **kwargs):
            calls.append((_name, int(args[2].shape[0])))
            return _run(*args, **kwargs)

        monkeypatch.setitem(engines.ENGINES, name, spy)
    monkeypatch.setattr(_reference, "run", engines.ENGINES["reference"])
    # Eager calls run a cached graph function, traced (and spied) once.
    engines._tf_kernel_graph.cache_clear()
    got = layers["auto"](x, mask=mask)
    shards = _xla_shards.shard_count(17)
    sizes = [int(n) for n in _xla_shards.shard_sizes(17, shards)]
    assert calls == [("reference", n) for n in sizes]
    assert got.dtype == tf.bfloat16
    del calls[:]
    want = layers["reference"](x, mask=mask)
    fused = layers["xla"](x, mask=mask)
    assert calls == [("reference", 17), ("xla", 17)]
    _assert_close(tf.cast(got, tf.float32), tf.cast(want, tf.float32), 2e-2)
    _assert_close(tf.cast(got, tf.float32), tf.cast(fused, tf.float32), 1e-1)
    del calls[:]
    grads = {}
    for name in ("auto", "reference", "xla"):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(layers[name](x, mask=mask), tf.float32) ** 2)
        grads[name] = tape.gradient(loss, [x, *layers[name].trainable_weights])
    assert calls == [("reference", 17), ("reference", 17), ("xla", 17)]
    for got, want, fused in zip(grads["auto"], grads["reference"], grads["xla"]):
        _assert_close(got, want, 2e-2)
        _assert_close(got, fused, 1e-1)
    del calls[:]
    with tf.GradientTape() as tape:
        tape.watch(x)
        Feedback(5, core="gru", engine="auto")(x)
    assert calls == [("xla", 17)]  # float32
    assert not engines.tf_kernels("xla", tf.cast(x, tf.bfloat16))
    assert not engines.tf_kernels("auto", x)
    assert engines.tf_kernels("auto", tf.cast(x, tf.bfloat16))


def test_eager_bfloat16_calls_run_as_one_graph(rng, monkeypatch):
    """An eager call of "auto" in bfloat16 runs TensorFlow's kernels as one
    graph function (not op by op, where its while loop would step in
    Python), traced once per training flag and options: inference and
    training give the reference engine's results and gradients, at any
    length, and with a mask."""
    engines._tf_kernel_graph.cache_clear()
    x = tf.constant(rng.standard_normal((9, 7, 3)), tf.float32)
    mask = np.ones((9, 7), bool)
    mask[2, 5:] = False
    layers = {
        name: Feedback(
            4, core="lstm", return_sequences=True, dtype="mixed_bfloat16", engine=name
        )
        for name in ("auto", "reference")
    }
    for layer in layers.values():
        layer(x)
    layers["reference"].set_weights(layers["auto"].get_weights())
    eager = []
    run = engines.ENGINES["reference"]

    def spy(*args, **kwargs):
        eager.append(tf.executing_eagerly())
        return run(*args, **kwargs)

    monkeypatch.setitem(engines.ENGINES, "reference", spy)
    monkeypatch.setattr(_reference, "run", spy)
    for length in (7, 4):
        xs = x[:, :length]
        got = layers["auto"](xs, mask=mask[:, :length])
        assert got.shape == (9, length, 4)
        want = layers["reference"](xs, mask=mask[:, :length])
        _assert_close(tf.cast(got, tf.float32), tf.cast(want, tf.float32), 2e-2)
    grads = {}
    for name, layer in layers.items():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(layer(x, mask=mask), tf.float32) ** 2)
        grads[name] = tape.gradient(loss, [x, *layer.trainable_weights])
    for got, want in zip(grads["auto"], grads["reference"]):
        _assert_close(got, want, 2e-2)
    # "auto" traced (not eager) for inference, per shard, and for training;
    # the "reference" layer ran eagerly, once per call.
    assert eager.count(True) == 3
    assert eager.count(False) >= 2
    traced = engines._tf_kernel_graph.cache_info()
    assert traced.misses == 2  # inference and training, one graph each


@pytest.mark.parametrize("core", ["simple", "gru", "lstm"])
def test_half_precision_gates_run_in_float32(core):
    """Under mixed precision the step's matmuls run in the compute dtype and
    its gates' elementwise math in float32; the states stay in the compute
    dtype."""
    spec = Feedback(4, core=core, feedback_units=2, dtype="mixed_bfloat16")
    x = tf.zeros((2, 3, 3))
    spec(x)
    recurrence = spec.cell.recurrence()
    params, _ = spec.cell.engine_params(False, 2)
    states = [tf.zeros((2, n), tf.bfloat16) for n in recurrence.state_sizes]
    projected = tf.zeros((2, spec.cell.spec.gates * 4), tf.bfloat16)

    @tf.function
    def one_step():
        return recurrence.step(params, projected, states)

    graph = one_step.get_concrete_function().graph
    gates = [op for op in graph.get_operations() if op.type in ("Sigmoid", "Tanh")]
    matmuls = [op for op in graph.get_operations() if op.type == "MatMul"]
    assert gates and matmuls
    core_gates = [op for op in gates if op.outputs[0].dtype == tf.float32]
    assert len(core_gates) >= {"simple": 1, "gru": 3, "lstm": 5}[core]
    assert {op.outputs[0].dtype for op in matmuls} == {tf.bfloat16}
    _, new_states, _ = one_step()
    assert [s.dtype for s in new_states] == [tf.bfloat16] * len(states)
    assert math._wide(tf.float32) is None


def test_xla_engine_unrolled_equals_reference(rng):
    x = tf.constant(rng.standard_normal((2, 4, 3)), tf.float32)
    mask = tf.constant([[True, True, False, True], [False, True, True, True]])
    ref, fused = _layer_pair(rng, x, core="simple", unroll=True, go_backwards=True)
    y_ref, g_ref = _loss_and_grads(ref, x, mask=mask)
    y, g = _loss_and_grads(fused, x, mask=mask)
    _assert_close(y, y_ref)
    for a, e in zip(g, g_ref):
        _assert_close(a, e)

    @tf.function(input_signature=[tf.TensorSpec([2, None, 4], tf.float32)])
    def unrolled_dynamic_time(projected):
        return engines.ENGINES["xla"](
            math.make_recurrence(fused.cell.spec, project=False),
            {"weights": fused.cell.step_params()},
            projected,
            fused.cell.get_initial_state(2),
            unroll=True,
        )[1]

    with pytest.raises(ValueError, match=r"static time dimension, .*\(2, None, 4\)"):
        unrolled_dynamic_time.get_concrete_function()


@pytest.mark.parametrize("go_backwards", [False, True])
def test_pad_time_keeps_results_and_bounds_shapes(rng, go_backwards):
    layer = Feedback(4, core="gru", feedback_units=2, go_backwards=go_backwards)
    for time in (5, 7, 8):
        x = tf.constant(rng.standard_normal((2, time, 3)), tf.float32)
        mask = tf.constant(np.arange(time)[None, :] < np.array([[time], [time - 2]]))
        padded, padded_mask = engines.pad_time(x, 4, mask)
        assert padded.shape == (2, 8, 3)  # 5, 7 and 8 share one shape
        np.testing.assert_array_equal(padded_mask[:, :time], mask)
        assert not np.any(padded_mask[:, time:])
        _assert_close(layer(padded, mask=padded_mask), layer(x, mask=mask))


@pytest.mark.parametrize(
    "args, pattern",
    [
        ((np.zeros((2, 3, 1)), 0), "`multiple` must be a positive integer, got 0"),
        ((np.zeros((2, 3, 1)), 2.0), "`multiple` must be a positive integer, got 2.0"),
        ((np.zeros((2, 3)), 2), r"`sequences` must have rank 3 .* got shape \(2, 3\)"),
    ],
)
def test_pad_time_rejects_bad_arguments(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        engines.pad_time(*args)


def _spy_engine(monkeypatch):
    """Records the time length of every call that reaches the fused engine."""
    lengths = []
    run = engines.ENGINES["xla"]

    def spy(recurrence, params, inputs, states, **options):
        lengths.append(inputs.shape[1])
        return run(recurrence, params, inputs, states, **options)

    monkeypatch.setitem(engines.ENGINES, "xla", spy)
    return lengths


@pytest.mark.parametrize(
    "options",
    [
        {"return_sequences": True, "return_state": True, "return_trace": True},
        {
            "core": "lstm",
            "go_backwards": True,
            "return_sequences": True,
            "attention": True,
        },
    ],
    ids=["trace", "lstm-backwards-attention"],
)
def test_time_buckets_keep_the_results_of_the_real_steps(rng, monkeypatch, options):
    kwargs = {"core": "gru", "feedback_units": 2, **options}
    bucketed = Feedback(4, **kwargs)
    plain = Feedback(4, time_buckets=None, **kwargs)
    x = tf.constant(rng.standard_normal((3, 11, 2)), tf.float32)
    mask = tf.constant(np.arange(11)[None, :] < np.array([[11], [7], [9]]))
    bucketed.build(x.shape)  # no call: it would compile a loop not used here
    plain.build(x.shape)
    plain.set_weights(bucketed.get_weights())
    lengths = _spy_engine(monkeypatch)
    results = []
    for layer in (bucketed, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = keras.tree.flatten(layer(x, mask=mask))
            loss = sum(tf.reduce_sum(tf.sin(o)) for o in out)
        results.append((out, tape.gradient(loss, [x, *layer.trainable_weights])))
    assert lengths == [16, 11]  # padded to its bucket, then not
    (out_a, grad_a), (out_b, grad_b) = results
    assert [o.shape for o in out_a] == [o.shape for o in out_b]  # caller's length
    for a, b in itertools.chain(zip(out_a, out_b), zip(grad_a, grad_b)):
        _assert_close(a, b, 1e-6)


def test_time_buckets_in_graphs_of_any_length_and_their_rule(rng, monkeypatch):
    # engine="xla": a tf.function of one's own otherwise runs the reference
    # loop under "auto" (it may be exported).
    layer = Feedback(3, feedback_units=2, return_sequences=True, engine="xla")
    plain = Feedback(3, feedback_units=2, return_sequences=True, time_buckets=None)
    fixed = Feedback(3, feedback_units=2, time_buckets=[12, 20])
    x = tf.constant(rng.standard_normal((2, 40, 2)), tf.float32)
    for other in (plain, fixed):
        layer(x), other(x)
        other.set_weights(layer.get_weights())

    @tf.function(input_signature=[tf.TensorSpec((None, None, 2))])
    def any_length(x):
        return layer(x)

    lengths = _spy_engine(monkeypatch)
    _assert_close(any_length(x[:, :13]), plain(x[:, :13]), 1e-6)
    assert lengths == [None, 13]  # traced for any length; a plain eager call
    del lengths[:]
    for time in (10, 12, 13, 20, 21):
        fixed(x[:, :time])
    assert lengths == [12, 12, 20, 20, 21]  # beyond the last bucket: unpadded
    del lengths[:]
    for time in range(1, 40, 3):
        layer(x[:, :time])
    assert set(lengths) == {8, 16, 32, 64}  # powers of two, at least 8
    config = fixed.get_config()
    assert config["time_buckets"] == [12, 20]
    assert Feedback.from_config(config).time_buckets == [12, 20]
    with pytest.raises(ValueError, match=r"`time_buckets` must be .* got \[20, 12\]"):
        Feedback(3, time_buckets=[20, 12])


def use_mode(monkeypatch, mode):
    """Makes the fused engine's loops run in ``mode``: "kept" (the forward
    pass keeps step inputs plus products: short static time axes),
    "windows" (by windows of 4 steps: long or dynamic ones) or "recomputed"
    (whole-sequence backward pass recomputing the products: a gradient of a
    loop that saved nothing); "feature-major": kept, with every per-step
    product of the engine run feature-major (large kernels)."""
    # Functions compiled here, for this test only (the constants below are
    # read, in the modules that use them, when a function is traced).
    monkeypatch.setattr(
        _xla, "_compiled", functools.lru_cache(maxsize=None)(_xla._compiled.__wrapped__)
    )
    kept = mode in ("kept", "feature-major")
    monkeypatch.setattr(_xla_windows, "KEEP_SUMS_MAX_STEPS", 256 if kept else 0)
    monkeypatch.setattr(_xla_windows, "SEGMENT_STEPS", 4)
    if mode == "recomputed":
        monkeypatch.setattr(_xla_windows, "segment", lambda cfg, inputs: None)
    if mode == "feature-major":
        use_feature_major(monkeypatch)


def use_feature_major(monkeypatch):
    """Every per-step product of the engine runs feature-major; returns the
    list that each such product, when traced, appends to."""
    traced = []
    original = _xla_layouts.feature_major_matmul
    monkeypatch.setattr(_xla_layouts, "FEATURE_MAJOR_MIN_WEIGHTS", 1)
    monkeypatch.setattr(
        _xla_layouts,
        "feature_major_matmul",
        lambda *a: traced.append(1) or original(*a),
    )
    return traced


MODES = ["kept", "windows", "recomputed", "feature-major"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("core", CORES)
def test_batch_shards_equal_reference(rng, monkeypatch, core, mode):
    # Three uneven shards (6, 6, 5 rows) whatever the machine's core count:
    # per-example params (a recurrent dropout mask), masks, initial states,
    # traces and go_backwards are split with the batch and put back in order,
    # in every mode of the loops (7 steps: a full window and a partial one).
    monkeypatch.setattr(_xla_shards, "shard_count", lambda batch=None: 3)
    use_mode(monkeypatch, mode)
    cell = _random_cell(
        rng, core, 4, 2, None, attention=core == "gru", residual=core == "lstm"
    )
    batch, time = 17, 7
    width = cell.spec.gates * 4
    projected = tf.constant(rng.standard_normal((batch, time, width)), tf.float32)
    states = [
        tf.constant(rng.standard_normal((batch, size)), tf.float32)
        for size in cell.state_size
    ]
    params = {
        "weights": cell.step_params(),
        "recurrent_mask": tf.constant(rng.uniform(0.0, 2.0, (batch, 4)), tf.float32),
    }
    mask = tf.constant(rng.random((batch, time)) < 0.7)
    options = dict(
        go_backwards=core != "simple",
        return_sequences=True,
        return_trace=True,
    )
    expected = _run_engine("reference", cell, params, projected, states, mask, options)
    actual = _run_engine(
        "xla",
        cell,
        params,
        projected,
        states,
        mask,
        dict(options, per_example=("recurrent_mask",)),
    )
    for kind in (0, 1):
        assert len(actual[kind]) == len(expected[kind])
        for a, e in zip(actual[kind], expected[kind]):
            _assert_close(a, e)


def test_shard_count_follows_batch_and_devices():
    cores = _xla_shards.cores()
    assert _xla.shard_count(1) == 1
    assert _xla.shard_count(8 * cores) == min(cores, _xla.MAX_SHARDS)
    assert 1 <= _xla.shard_count(None) <= _xla.MAX_SHARDS


def test_gradient_of_a_function_traced_without_tape(rng):
    # Traced with no tape active, the forward loop saves no states; a tape
    # around the call must still get exact gradients (recomputed states).
    x = tf.constant(rng.standard_normal((20, 5, 3)), tf.float32)
    ref, fused = _layer_pair(rng, x, core="gru", feedback_units=2)
    call = tf.function(lambda x: fused(x))
    call(x)  # traced here, outside any tape
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = call(x)
        loss = tf.reduce_sum(y * tf.cos(y))
    grads = tape.gradient(loss, [x] + fused.trainable_weights)
    y_ref, g_ref = None, None
    with tf.GradientTape() as tape:
        tape.watch(x)
        y_ref = ref(x)
        loss = tf.reduce_sum(y_ref * tf.cos(y_ref))
    g_ref = tape.gradient(loss, [x] + ref.trainable_weights)
    _assert_close(y, y_ref)
    for a, e in zip(grads, g_ref):
        _assert_close(a, e)


# (core, feature-major products, dynamic time axis): every pair of values of
# two of the three is in a row (each core with batch- and feature-major
# products, each under a fixed and a dynamic time axis; the products under
# both). A dynamic axis compiles the loops again (about 15 s a row).
WINDOWS_CASES = [
    ("simple", False, False),
    ("simple", True, True),
    ("gru", False, True),
    ("gru", True, False),
    ("lstm", False, False),
    ("lstm", True, True),
]


@pytest.mark.parametrize(
    "core, feature_major, dynamic",
    WINDOWS_CASES,
    ids=[
        f"{c}-{'feature' if f else 'batch'}-{'dynamic' if d else 'static'}"
        for c, f, d in WINDOWS_CASES
    ],
)
def test_layer_by_windows_equals_reference(
    rng, monkeypatch, core, feature_major, dynamic
):
    # A Feedback layer (the engine projects its inputs) over 11 steps in
    # windows of 4 (the last one partial), masked, going backwards, with
    # feedback, attention and return_sequences: outputs, input and weight
    # gradients equal the reference engine's, under a fixed or a dynamic
    # time axis, with the per-step products batch- or feature-major.
    use_mode(monkeypatch, "windows")
    feature_major_products = use_feature_major(monkeypatch) if feature_major else []
    traced = []
    for name in ("forward_windows", "backward_windows"):
        original = getattr(_xla_windows, name)
        monkeypatch.setattr(
            _xla_windows,
            name,
            lambda *a, f=original, n=name: traced.append(n) or f(*a),
        )
    x = tf.constant(rng.standard_normal((5, 11, 3)), tf.float32)
    mask = tf.constant(rng.random((5, 11)) < 0.8)
    ref, fused = _layer_pair(
        rng,
        x,
        core=core,
        feedback_units=2,
        attention=True,
        residual=core == "simple",
        go_backwards=True,
        return_sequences=True,
    )
    y_ref, g_ref = _loss_and_grads(ref, x, mask=mask)
    call = functools.partial(_loss_and_grads, fused)
    if dynamic:
        spec = tf.TensorSpec([None, None, 3], tf.float32)
        call = tf.function(
            lambda x, mask: _loss_and_grads(fused, x, mask=mask),
            input_signature=[spec, tf.TensorSpec([None, None], tf.bool)],
        )
    y, g = call(x, mask=mask)
    _assert_close(y, y_ref)
    for a, e in zip(g, g_ref):
        _assert_close(a, e)
    assert {"forward_windows", "backward_windows"} <= set(traced)
    assert bool(feature_major_products) == feature_major


@pytest.mark.parametrize("mode", ["kept", "windows"])
def test_weight_gradients_without_input_gradient(rng, monkeypatch, mode):
    # A tape that does not watch the inputs (a model's own inputs in
    # training): the backward pass skips the inputs' gradient, and the
    # weights' gradients still equal the reference engine's.
    use_mode(monkeypatch, mode)
    wanted = []
    original = _xla_reverse.projection_vjp
    monkeypatch.setattr(
        _xla_reverse,
        "projection_vjp",
        lambda cfg, *a: wanted.append(cfg.input_gradient) or original(cfg, *a),
    )
    x = tf.constant(rng.standard_normal((4, 9, 3)), tf.float32)
    ref, fused = _layer_pair(rng, x, core="gru", feedback_units=2)
    grads = []
    for layer in (ref, fused):
        with tf.GradientTape() as tape:
            y = layer(x)
            loss = tf.reduce_sum(y * tf.cos(y))
        grads.append(tape.gradient(loss, layer.trainable_weights))
    for a, e in zip(grads[1], grads[0]):
        _assert_close(a, e)
    assert wanted and not any(wanted)


EMPTY_CASES = [
    # (core, batch, time, dynamic shapes, loop mode, unroll, the engine
    # projects the inputs): each value of each of the first six with inputs
    # projected by the engine and already projected (ten rows rather than
    # all nine cases both ways; a dynamic case costs 5 to 14 s).
    ("lstm", 3, 0, False, "kept", False, False),
    ("gru", 3, 0, False, "kept", True, True),
    ("gru", 3, 0, False, "kept", True, False),
    ("simple", 3, 0, True, "windows", False, True),
    ("gru", 3, 0, True, "recomputed", False, True),
    ("lstm", 0, 5, False, "kept", False, True),
    ("gru", 0, 5, True, "windows", False, False),
    ("simple", 0, 5, True, "recomputed", False, False),
    ("gru", 0, 0, False, "kept", False, True),
    ("lstm", 0, 0, True, "windows", False, False),
]


def test_the_empty_cases_run_each_value_both_projected_and_not():
    for column in range(6):
        for value in {row[column] for row in EMPTY_CASES}:
            assert {row[6] for row in EMPTY_CASES if row[column] == value} == {
                False,
                True,
            }, (column, value)


@pytest.mark.parametrize(
    "core, batch, time, dynamic, mode, unroll, project",
    EMPTY_CASES,
    ids=[
        f"{c}-B{b}-T{t}-{'dynamic' if d else 'static'}-{m}{'-unrolled' if u else ''}"
        f"-{'project' if p else 'projected'}"
        for c, b, t, d, m, u, p in EMPTY_CASES
    ],
)
def test_empty_time_or_batch_equals_reference(
    rng, monkeypatch, core, batch, time, dynamic, mode, unroll, project
):
    # No step (T=0) or no row (B=0), static or dynamic shapes, in every mode
    # of the loops: the fused engine returns what the reference engine
    # returns (no outputs, zero last outputs, the initial states when no step
    # runs) with the same gradients (the initial states' pass through).
    use_mode(monkeypatch, mode)
    cell = _random_cell(rng, core, 4, 2, None, attention=True)
    recurrence = math.make_recurrence(cell.spec, project=project)
    width = 3 if project else cell.spec.gates * 4
    inputs = tf.constant(rng.standard_normal((batch, time, width)), tf.float32)
    states = [
        tf.constant(rng.standard_normal((batch, size)), tf.float32)
        for size in cell.state_size
    ]
    mask = tf.constant(rng.random((batch, time)) < 0.7)
    params = {"weights": cell.step_params()}

    def run(engine, inputs, states, mask):
        sources = [inputs, states, params]
        with tf.GradientTape() as tape:
            tape.watch(tf.nest.flatten(sources))
            outputs, last, final_states, traces = engine(
                recurrence,
                params,
                inputs,
                states,
                mask=mask,
                go_backwards=core != "lstm",
                unroll=unroll,
                return_trace=True,
            )
            results = [outputs, last] + final_states
            results += [traces[k] for k in sorted(traces)]
            loss = sum(
                tf.reduce_sum(r * tf.cos(tf.range(r.shape[-1], dtype=tf.float32)))
                for r in results
            )
        grads = tf.nest.flatten(tape.gradient(loss, sources))
        grads = [
            tf.zeros_like(s) if g is None else g
            for g, s in zip(grads, tf.nest.flatten(sources))
        ]
        return results, grads

    calls = {e: functools.partial(run, e) for e in (_xla.run, _reference.run)}
    if dynamic:
        signature = [
            tf.TensorSpec([None, None, width], tf.float32),
            [tf.TensorSpec([None, size], tf.float32) for size in cell.state_size],
            tf.TensorSpec([None, None], tf.bool),
        ]
        calls = {e: tf.function(f, input_signature=signature) for e, f in calls.items()}
    actual = calls[_xla.run](inputs, states, mask)
    expected = calls[_reference.run](inputs, states, mask)
    for kind in (0, 1):  # results, then gradients
        assert len(actual[kind]) == len(expected[kind])
        for a, e in zip(actual[kind], expected[kind]):
            _assert_close(a, e)
    (outputs, last, *final_states), _ = actual
    assert outputs.shape == (batch, time, cell.output_size)
    assert last.shape == (batch, cell.output_size)
    if time == 0:
        assert not np.any(last)
        for a, e in zip(final_states, states):
            np.testing.assert_array_equal(a, e)
