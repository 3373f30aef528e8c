"""Never say OK when it is not: non-finite results, batches that do not fit,
and the misuses that used to give a silently wrong answer.

Each test is a case that gave a wrong answer (or an error that named
nothing) before; the checks assert the error type and that its message
names the argument, or the correct result against an oracle.
"""

import json
import math
import os

import hypothesis
import hypothesis.extra.numpy as hnp
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_covers_every_pair
from hypothesis import strategies as st

from keras_feedback import cli
from keras_feedback import export
from keras_feedback import seq2seq
from keras_feedback.layers import ConvFeedback2D
from keras_feedback.layers import Equilibrium
from keras_feedback.layers import Feedback
from keras_feedback.layers import FeedbackCell
from keras_feedback.layers import FeedbackLoop
from keras_feedback.layers import convert

ENGINES = ("reference", "xla")
CORES = ("simple", "gru", "lstm")


# --- the one error tally ---------------------------------------------------------


@pytest.mark.property
@hypothesis.given(
    data=st.data(),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
    side=st.sampled_from(["export", "keras", "both"]),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    tolerance=st.sampled_from([1e-4, 1.0, 1e30]),
)
def test_a_nonfinite_value_is_never_within_tolerance(data, shape, side, bad, tolerance):
    expected = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-5, 5)))
    actual = expected.copy()
    flat = data.draw(st.integers(0, expected.size - 1))
    index = np.unravel_index(flat, shape)
    if side in ("export", "both"):
        actual[index] = bad
    if side in ("keras", "both"):
        expected[index] = bad
    tally = export.ErrorTally().add("y", actual, expected)
    assert not tally.within(tolerance)
    assert tally.max_rel == math.inf and tally.max_abs == math.inf
    (problem,) = tally.nonfinite
    assert problem.startswith("output y: ")
    assert f"first at index {tuple(int(i) for i in index)}" in problem
    label = "NaN" if np.isnan(bad) else "Inf"
    if side == "export":
        assert f"1 {label} where Keras is finite" in problem
    elif side == "keras":
        assert f"Keras has 1 {label} where the export is finite" in problem
    else:
        assert "non-finite in both" in problem
    # A finite pair of the same values is within any tolerance.
    finite = np.nan_to_num(expected, posinf=0.0, neginf=0.0)
    clean = export.ErrorTally().add("y", finite, finite)
    assert clean.within(0.0) and not clean.nonfinite


def test_the_tally_counts_and_keeps_the_worst_output():
    keras_out = np.ones((2, 3, 4))
    lite = keras_out.copy()
    lite[0, :, :3] = np.nan  # 9 NaN
    lite[1, 0, 0] = np.inf
    tally = export.ErrorTally()
    tally.add("fine", keras_out * 1.5, keras_out)
    assert tally.max_rel == pytest.approx(0.5) and tally.within(0.6)
    tally.add("broken", lite, keras_out)
    assert not tally.within(1e9)
    assert tally.per_output["fine"]["nonfinite"] is None
    assert tally.per_output["broken"]["max_rel_error"] == math.inf
    assert tally.nonfinite == [
        "output broken: 9 NaN where Keras is finite, 1 Inf where Keras is finite; "
        "first at index (0, 0, 0)"
    ]


def test_json_reports_stay_strict_json():
    report = {"max_rel_error": math.inf, "low": -math.inf, "nan": np.float32("nan")}
    report["nested"] = [np.float64(2.5), {"ok": np.bool_(True)}, np.arange(2)]
    text = export.json_report(report)

    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    assert json.loads(text, parse_constant=refuse) == {
        "max_rel_error": "inf",
        "low": "-inf",
        "nan": "nan",
        "nested": [2.5, {"ok": True}, [0, 1]],
    }


def _small_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, 3), name="x")
    hidden = Feedback(4, feedback_units=2, return_sequences=True)(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="y")(hidden))


def _poison(model):
    """One NaN in the first kernel: every output of the model is NaN."""
    weight = model.weights[0].numpy()
    weight[0, 0] = np.nan
    model.weights[0].assign(weight)


def test_verifiers_never_pass_nan_outputs(tmp_path, rng):
    model = _small_model()
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    lite = export.export_litert(model, tmp_path / "m.tflite")
    served = tmp_path / "served"
    export.export_saved_model(model, served)
    assert export.verify_litert(model, lite, x)["within_tolerance"]
    # The exports are good, the Keras model they are compared with is not.
    _poison(model)
    report = export.verify_litert(model, lite, x)
    assert not report["within_tolerance"] and report["max_rel_error"] == math.inf
    assert report["nonfinite"] == [
        "output y: Keras has 20 NaN where the export is finite; first at index "
        "(0, 0, 0)"
    ]
    saved = export.verify_saved_model(model, served, x)
    assert not saved["within_tolerance"]
    assert saved["serving_max_rel_error"] == saved["step_max_rel_error"] == math.inf
    assert [p.split(":")[0] for p in saved["nonfinite"]] == [
        "serving_default output y",
        "step output y",
    ]
    json.loads(export.json_report(report), parse_constant=float.__new__)
    # An export that computes NaN against a finite Keras model: the reverse.
    nan_lite = export.export_litert(model, tmp_path / "nan.tflite")
    clean = _small_model()
    report = export.verify_litert(clean, nan_lite, x)
    assert not report["within_tolerance"]
    assert "20 NaN where Keras is finite" in report["nonfinite"][0]


def test_verifiers_refuse_nonfinite_inputs(tmp_path, rng):
    model = _small_model()
    lite = export.export_litert(model, tmp_path / "m.tflite")
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    x[1, 2, 0] = np.nan
    message = r"`inputs`: input 'x' has 1 non-finite values .* index \(1, 2, 0\)"
    with pytest.raises(ValueError, match=message):
        export.verify_litert(model, lite, x)
    export.export_saved_model(model, tmp_path / "served")
    with pytest.raises(ValueError, match=message):
        export.verify_saved_model(model, tmp_path / "served", x)


def test_the_cli_fails_an_export_of_a_nan_model(tmp_path, capsys):
    model = _small_model()
    _poison(model)
    path = tmp_path / "nan.keras"
    model.save(path)
    code = cli.main(
        [
            "export",
            str(path),
            "--saved-model",
            str(tmp_path / "s"),
            "--litert",
            str(tmp_path / "m.tflite"),
            "--quantize",
            "dynamic_range",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    rows = [
        line for line in out.splitlines() if line.startswith(("SavedModel", "LiteRT"))
    ]
    assert len(rows) == 3 and all(row.split()[-1] == "FAIL" for row in rows), out
    assert "OK" not in out and "0.00e+00" not in out
    assert (
        "not finite: SavedModel serving_default output y: 64 values non-finite" in out
    )


# --- batches that do not fit -------------------------------------------------------


def _in_graph(words, rows, batch):
    """The in-graph form of a batch message: the sizes R and B follow the
    words as the assertion's data."""
    words = words.replace(f"batch size {rows}", "batch size R", 1)
    words = words.replace(f"batch size {batch}", "batch size B", 1)
    return words + rf".*; with R, B =\] \[{rows}\] \[{batch}\]"


def _graph_call(layer, state_spec):
    """The layer in a tf.function with a None batch (fit, predict, export)."""
    return tf.function(
        lambda x, s: layer(x, initial_state=s),
        input_signature=[tf.TensorSpec((None, None, 3)), state_spec],
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_an_initial_state_of_another_batch_is_refused(rng, engine):
    layer = Feedback(4, feedback_units=0, engine=engine)
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    state = np.zeros((1, 4), "float32")
    words = (
        r"Argument `initial_state`\[0\] \(h\) has batch size 1, the inputs have "
        r"batch size 2: expected one row per input row"
    )
    with pytest.raises(ValueError, match=words):
        layer(x, initial_state=[state])
    with pytest.raises(tf.errors.InvalidArgumentError, match=_in_graph(words, 1, 2)):
        _graph_call(layer, tf.TensorSpec((None, 4)))(x, state)
    # The same call with a fitting state runs, and equals the eager call.
    good = rng.standard_normal((2, 4)).astype("float32")
    np.testing.assert_allclose(
        _graph_call(layer, tf.TensorSpec((None, 4)))(x, good),
        layer(x, initial_state=[good]),
        atol=1e-6,
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_a_memory_of_another_batch_is_refused(rng, engine):
    layer = Feedback(4, memory_attention="dot", engine=engine)
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    memory = rng.standard_normal((1, 6, 5)).astype("float32")
    words = r"Argument `memory` has batch size 1, the inputs have batch size 2"
    with pytest.raises(ValueError, match=words):
        layer(x, memory=memory)
    call = tf.function(
        lambda x, m: layer(x, memory=m),
        input_signature=[tf.TensorSpec((None, None, 3)), tf.TensorSpec((None, 6, 5))],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=_in_graph(words, 1, 2)):
        call(x, memory)


@pytest.mark.parametrize("solver", ["picard", "anderson"])
def test_equilibrium_refuses_a_start_of_another_batch(rng, solver):
    block = keras.layers.Dense(4, activation="tanh")
    layer = Equilibrium(block, feedback="add", solver=solver, engine="reference")
    x = rng.standard_normal((3, 4)).astype("float32")
    start = np.zeros((1, 4), "float32")
    words = r"Argument `initial_state` has batch size 1, the inputs have batch size 3"
    with pytest.raises(ValueError, match=words):
        layer(x, initial_state=start)
    call = tf.function(
        lambda x, z: layer(x, initial_state=z),
        input_signature=[tf.TensorSpec((None, 4)), tf.TensorSpec((None, 4))],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=_in_graph(words, 1, 3)):
        call(x, start)
    fitting = np.zeros((3, 4), "float32")
    np.testing.assert_allclose(call(x, fitting), layer(x), atol=1e-5)


def test_stateful_predict_refuses_a_last_batch_that_does_not_fit(rng):
    inputs = keras.Input(batch_shape=(2, None, 3))
    model = keras.Model(inputs, Feedback(4, stateful=True)(inputs))
    words = (
        r"was built for batch size R and got inputs with batch size B: feed "
        r"batches of 2 \(in predict, evaluate and fit, a number of rows that is "
        r"a multiple of 2.*; with R, B =\] \[2\] \[1\]"
    )
    x = rng.standard_normal((5, 4, 3)).astype("float32")
    with pytest.raises(tf.errors.InvalidArgumentError, match=words):
        model.predict(x, batch_size=2, verbose=0)
    model.layers[-1].reset_state()
    rows = model.predict(x[:4], batch_size=2, verbose=0)
    # Two batches of 2, the second starting from the states the first left.
    config = model.layers[-1].get_config() | {"stateful": False, "return_state": True}
    plain = Feedback.from_config(config)
    plain.build((None, None, 3))
    plain.set_weights(model.layers[-1].get_weights())
    first, *states = plain(x[:2])
    second, *_ = plain(x[2:4], initial_state=states)
    np.testing.assert_allclose(rows, np.concatenate([first, second]), atol=1e-5)


# --- seq2seq arguments -------------------------------------------------------------


def _table_step(vocabulary=12):
    table = tf.math.log(
        tf.nn.softmax(tf.random.stateless_normal([vocabulary, vocabulary], [1, 2]))
    )

    def step(tokens, states, context):
        return tf.gather(table, tokens), states

    return step


def test_decoders_check_tokens_against_the_vocabulary():
    step = _table_step(12)
    states = [tf.zeros([2, 1])]
    common = dict(end_token=0, max_length=3)
    words = r"`start_token`=50 is not a token of the vocabulary of 12.*< 12"
    with pytest.raises(ValueError, match=words):
        seq2seq.greedy_decode(step, states, start_token=50, **common)
    with pytest.raises(ValueError, match=words):
        seq2seq.sample(step, states, start_token=50, **common)
    with pytest.raises(ValueError, match=words):
        seq2seq.beam_search(step, states, start_token=50, beam_width=2, **common)
    with pytest.raises(
        ValueError, match=r"`top_k`=50 is larger than the vocabulary of 12"
    ):
        seq2seq.sample(step, states, start_token=1, top_k=50, **common)
    # top_k equal to the vocabulary is no filter at all.
    full = seq2seq.sample(step, states, start_token=1, top_k=12, seed=3, **common)
    unfiltered = seq2seq.sample(step, states, start_token=1, seed=3, **common)
    np.testing.assert_array_equal(full.tokens, unfiltered.tokens)


def test_an_xla_decoder_over_layer_step_decodes_any_row_count(rng):
    # The batch check inside `step` compiles under XLA (no StringFormat op):
    # a decoder first traced for 2 rows decodes 1 and 3.
    embedding = keras.layers.Embedding(7, 4)
    decoder = Feedback(6, memory_attention="dot", return_sequences=True)
    projection = keras.layers.Dense(7)
    memory = rng.standard_normal((3, 5, 3)).astype("float32")
    projection(decoder(embedding(np.zeros((3, 2), "int32")), memory=memory))
    step = seq2seq.layer_step(decoder, embedding, projection)
    results = {}
    for rows in (2, 1, 3):
        context = {"memory": tf.constant(memory[:rows])}
        results[rows] = seq2seq.greedy_decode(
            step,
            decoder.get_initial_state(rows),
            start_token=1,
            end_token=0,
            max_length=4,
            context=context,
        ).tokens.numpy()
    np.testing.assert_array_equal(results[1], results[3][:1])
    np.testing.assert_array_equal(results[2], results[3][:2])


@pytest.mark.parametrize("states", [None, [], {}])
def test_decoders_without_state_tensors_say_so(states):
    with pytest.raises(
        ValueError, match="`initial_states` and `context` hold no tensor"
    ):
        seq2seq.greedy_decode(
            _table_step(), states, start_token=1, end_token=0, max_length=3
        )


def test_beams_beyond_the_hypotheses_are_marked_never_repeated():
    vocabulary, width = 3, 5
    step = _table_step(vocabulary)
    result = seq2seq.beam_search(
        step,
        [tf.zeros([2, 1])],
        start_token=1,
        end_token=0,
        max_length=1,
        beam_width=width,
    )
    scores = result.scores.numpy()
    tokens = result.tokens.numpy()
    lengths = result.lengths.numpy()
    # One step from one start: exactly `vocabulary` outputs exist per row.
    for row in range(2):
        real = np.isfinite(scores[row])
        assert real.sum() == vocabulary
        assert len({tokens[row, b].tobytes() for b in np.flatnonzero(real)}) == 3
        assert np.all(scores[row, ~real] == -np.inf)
        assert np.all(lengths[row, ~real] == 0) and np.all(tokens[row, ~real] == 0)
        # The real beams are every token, best first, with its log-probability.
        log_probs = step(tf.constant([1]), None, None)[0].numpy()[0]
        np.testing.assert_allclose(
            scores[row, real], np.sort(log_probs)[::-1], rtol=1e-6
        )


# --- booleans are booleans ----------------------------------------------------------


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: Feedback(4, attention="False"), "attention"),
        (lambda: Feedback(4, residual=1), "residual"),
        (lambda: Feedback(4, return_sequences="yes"), "return_sequences"),
        (lambda: Feedback(4, stateful="False"), "stateful"),
        (lambda: FeedbackCell(4, use_bias="no"), "use_bias"),
        (lambda: ConvFeedback2D(2, 3, go_backwards="True"), "go_backwards"),
        (
            lambda: FeedbackLoop(keras.layers.Dense(2), 2, return_iterations="no"),
            "return_iterations",
        ),
    ],
)
def test_boolean_arguments_take_booleans_only(make, argument):
    with pytest.raises(
        TypeError, match=rf"Argument `{argument}` must be True or False"
    ):
        make()


def test_export_options_take_booleans_and_refuse_what_they_ignore(tmp_path, rng):
    model = _small_model()
    path = tmp_path / "m.tflite"
    with pytest.raises(
        TypeError, match=r"`streaming` must be True or False, got 'False'"
    ):
        export.export_litert(model, path, streaming="False")
    with pytest.raises(TypeError, match=r"`overwrite` must be True or False"):
        export.export_litert(model, path, overwrite="yes")
    with pytest.raises(TypeError, match=r"`overwrite` must be True or False"):
        export.export_saved_model(model, tmp_path / "s", overwrite=1)
    data = rng.standard_normal((2, 5, 3)).astype("float32")
    for quantization in (None, "float16", "dynamic_range"):
        with pytest.raises(ValueError, match=r"`representative_data` calibrates"):
            export.export_litert(
                model, path, quantization=quantization, representative_data=data
            )
    assert not path.exists() and not (tmp_path / "s").exists()


# --- conversion of stateful Keras layers -----------------------------------------


def _stateful(cls, how):
    def layer():
        return cls(4, stateful=True, return_sequences=True, name="rnn")

    if how == "sequential":
        return keras.Sequential([keras.Input(batch_shape=(2, None, 3)), layer()])
    if how == "functional":
        inputs = keras.Input(batch_shape=(2, None, 3))
        return keras.Model(inputs, keras.layers.Dense(2)(layer()(inputs)))
    inner = keras.Sequential([layer(), keras.layers.Dense(2)])
    return keras.Sequential([keras.Input(batch_shape=(2, None, 3)), inner])


@pytest.mark.parametrize("how", ["sequential", "functional", "nested"])
@pytest.mark.parametrize(
    "cls", [keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN]
)
def test_stateful_keras_layers_convert(rng, cls, how):
    model = _stateful(cls, how)
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    model(x)  # the Keras layer now holds states: they carry over
    converted = convert(model)
    for _ in range(2):  # and both keep them from call to call
        np.testing.assert_allclose(converted(x), model(x), atol=1e-5)
    feedback = [
        layer for layer in converted._flatten_layers() if isinstance(layer, Feedback)
    ]
    assert len(feedback) == 1 and feedback[0].stateful
    assert feedback[0].states[0].shape[0] == 2


def test_from_keras_of_a_built_stateful_layer(rng):
    lstm = keras.layers.LSTM(4, stateful=True)
    keras.Sequential([keras.Input(batch_shape=(3, None, 2)), lstm])
    x = rng.standard_normal((3, 4, 2)).astype("float32")
    lstm(x)
    layer = Feedback.from_keras(lstm)
    np.testing.assert_allclose(layer(x), lstm(x), atol=1e-5)
    with pytest.raises(ValueError, match="built for batch size 3"):
        layer(x[:2])


# --- masked steps reach no gradient -----------------------------------------------


def _masked_batch(rng, shape):
    x = rng.standard_normal(shape)
    mask = np.ones(shape[:2], bool)
    mask[0, -2:] = False  # padding at the end
    mask[1, :2] = False  # at the start
    mask[2, 2:4] = False  # a gap
    poisoned = x.copy()
    poisoned[~mask] = np.nan
    poisoned[2, 3] = np.inf
    zeros = x.copy()
    zeros[~mask] = 0.0
    return poisoned, zeros, mask


def _outputs_and_gradients(layer, x, mask, **kwargs):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, mask=mask, **kwargs)
        loss = tf.reduce_sum(tf.square(y))
    grads = tape.gradient(loss, [*layer.trainable_weights, x])
    return [y.numpy()] + [g.numpy() for g in grads]


# (engine, core, memory attention): every pair of values of two of the three
# in some row (pairwise, in place of the 12 rows of the full product): each
# core on both engines, with and without memory; each engine both ways.
NAN_CASES = [
    ("reference", "simple", False),
    ("xla", "simple", True),
    ("reference", "gru", True),
    ("xla", "gru", False),
    ("reference", "lstm", False),
    ("xla", "lstm", True),
]


def test_the_nan_cases_cover_every_pair_of_options():
    options = [ENGINES, CORES, (False, True)]
    assert_covers_every_pair(NAN_CASES, options)


@pytest.mark.parametrize(
    "engine, core, memory",
    NAN_CASES,
    ids=[f"{e}-{c}-{'memory' if m else 'plain'}" for e, c, m in NAN_CASES],
)
def test_nan_at_masked_steps_reaches_no_output_or_gradient(rng, engine, core, memory):
    poisoned, zeros, mask = _masked_batch(rng, (3, 6, 2))
    options = {"memory_attention": "dot"} if memory else {}
    layer = Feedback(
        4,
        feedback_units=2,
        core=core,
        attention=True,
        return_sequences=True,
        engine=engine,
        dtype="float64",
        **options,
    )
    extra = {}
    if memory:
        extra["memory"] = rng.standard_normal((3, 4, 3))
        extra["memory_mask"] = np.array([[1, 1, 1, 0]] * 3, bool)
        extra["memory"][:, 3] = np.nan  # padding of the memory too
    with_nan = _outputs_and_gradients(layer, poisoned, mask, **extra)
    if memory:
        extra["memory"] = np.nan_to_num(extra["memory"], nan=0.0)
    with_zeros = _outputs_and_gradients(layer, zeros, mask, **extra)
    for a, b in zip(with_nan, with_zeros):
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, b)


def test_nan_at_masked_steps_of_step_and_conv(rng):
    layer = Feedback(4, feedback_units=2, core="gru", dtype="float64")
    x = rng.standard_normal((3, 2))
    x[1] = np.nan
    mask = np.array([True, False, True])
    states = layer.get_initial_state(3)
    x_t = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        output, new = layer.step(x_t, states, mask=mask)
        loss = tf.reduce_sum(output) + sum(tf.reduce_sum(s) for s in new)
    grads = tape.gradient(loss, [*layer.trainable_weights, x_t])
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert np.all(np.isfinite(output)) and np.all(grads[-1][1] == 0)

    poisoned, zeros, mask = _masked_batch(rng, (3, 5, 4, 4, 1))
    conv = ConvFeedback2D(
        2,
        3,
        padding="same",
        feedback_filters=1,
        return_sequences=True,
        dtype="float64",
    )
    for engine in ENGINES:
        conv.engine = engine
        with_nan = _outputs_and_gradients(conv, poisoned, mask)
        with_zeros = _outputs_and_gradients(conv, zeros, mask)
        for a, b in zip(with_nan, with_zeros):
            assert np.all(np.isfinite(a))
            np.testing.assert_array_equal(a, b)


# --- dilated convolutions in float64 ---------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_dilated_conv_feedback_trains_in_float64(rng, engine):
    from helpers import check_directional_derivatives

    layer = ConvFeedback2D(
        2,
        3,
        dilation_rate=2,
        padding="same",
        feedback_filters=1,
        engine=engine,
        dtype="float64",
    )
    x = tf.constant(rng.standard_normal((2, 3, 7, 7, 1)))
    layer(x)

    def loss():
        return tf.reduce_sum(tf.square(layer(x)))

    check_directional_derivatives(loss, layer.trainable_weights, rng)


# --- the command line: corrupt and empty files ------------------------------------


def _cli(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.err


def test_the_cli_names_the_flag_of_every_corrupt_or_empty_file(tmp_path, capsys):
    model = _small_model()
    good = str(tmp_path / "good.keras")
    model.save(good)
    files = {}
    for suffix in (".keras", ".json", ".npz", ".npy"):
        files[f"empty{suffix}"] = b""
        files[f"corrupt{suffix}"] = b"PK\x03\x04 this is not what it says"
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "garbage.json").write_text('{"model": {"garbage": 1}}')
    np.savez(tmp_path / "nan.npz", x=np.full((2, 4, 3), np.nan), y=np.zeros((2, 2)))
    np.savez(tmp_path / "shape.npz", x=np.zeros((2, 4, 7)), y=np.zeros((2, 2)))

    def path(name):
        return str(tmp_path / name)

    out = path("out")
    train = ["train", "--dataset", "adding_problem/T50", "--out", out]
    lite = path("out.tflite")
    cases = [
        (["export", path("empty.keras"), "--litert", lite], "the file is empty"),
        (["export", path("corrupt.keras"), "--litert", lite], "not a loadable .keras"),
        ([*train, "--model", path("empty.json")], "--model"),
        ([*train, "--model", path("corrupt.json")], "is not JSON"),
        ([*train, "--model", path("garbage.json")], '"model" is not a Keras model'),
        (["diagnose", good, "--data", path("empty.npz")], "--data"),
        (["diagnose", good, "--data", path("corrupt.npz")], "--data"),
        (["diagnose", good, "--data", path("nan.npz")], "non-finite"),
        (["diagnose", good, "--data", path("shape.npz")], "(2, 4, 7)"),
        (["diagnose", path("empty.keras"), "--data", path("nan.npz")], "empty"),
        (
            [
                "export",
                good,
                "--litert",
                out,
                "--quantize",
                "int8",
                "--representative-data",
                path("corrupt.npy"),
            ],
            "--representative-data",
        ),
        (
            [
                "export",
                good,
                "--litert",
                out,
                "--quantize",
                "int8",
                "--representative-data",
                path("empty.npy"),
            ],
            "--representative-data",
        ),
        (
            [
                "export",
                good,
                "--litert",
                out,
                "--quantize",
                "int8",
                "--representative-data",
                path("corrupt.npz"),
            ],
            "--representative-data",
        ),
        ([*train, "--model", path("garbage.json"), "--dataset", "no_such"], "--model"),
    ]
    for argv, words in cases:
        code, err = _cli(argv, capsys)
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and words in err, (argv, err)
        assert "internal error" not in err and "Traceback" not in err, (argv, err)
    assert not os.path.exists(out) and not os.path.exists(lite)


def test_the_cli_names_flags_not_python_arguments(tmp_path, capsys):
    config = tmp_path / "model.json"
    config.write_text('{"feedback": {"units": 4}, "epochs": 1}')
    data_dir = str(tmp_path / "tfds")
    base = ["train", "--model", str(config), "--data-dir", data_dir]
    base += ["--out", str(tmp_path / "out")]
    for extra, flag in [
        (["--dataset", "no_such_dataset"], "--dataset"),
        (["--dataset", "adding_problem/T50", "--train-split", "nope"], "--train-split"),
        (
            ["--dataset", "adding_problem/T50", "--eval-split", "test[5:2]"],
            "--eval-split",
        ),
    ]:
        code, err = _cli([*base, *extra], capsys)
        assert code == 2, err
        assert f"error: {flag}" in err and "Argument `" not in err, err
