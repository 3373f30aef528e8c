"""Memory attention in the feedback layer, and decoding with its step.

The layer is compared with a numpy implementation of the equations
(``numpy_reference.attention_sequence``), with finite differences (float64)
and across the two engines; the decoders with each other and with an
independent recomputation of the chosen tokens' log-probabilities.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import check_directional_derivatives
from helpers import randomise
from helpers import relative_error
from helpers import weights_by_name
from numpy_reference import attention_sequence

from keras_feedback import seq2seq
from keras_feedback.layers import ConvFeedback2D
from keras_feedback.layers import Feedback

FORMS = ("additive", "dot", "scaled_dot")


def _data(rng, batch=3, time=5, features=4, memory_time=6, memory_features=5):
    x = rng.standard_normal((batch, time, features)).astype("float32")
    memory = rng.standard_normal((batch, memory_time, memory_features)).astype(
        "float32"
    )
    memory_mask = np.ones((batch, memory_time), bool)
    memory_mask[1, 3:] = False
    memory_mask[-1, 5:] = False
    return x, memory, memory_mask


CASES = [
    # form, core, input_feeding, feedback_units, attention gate, output_units, memory_units
    ("additive", "gru", True, 2, False, None, None),
    ("additive", "lstm", False, 0, True, 3, 4),
    ("dot", "gru", False, 2, True, None, None),
    ("dot", "lstm", True, 0, False, 3, 4),
    ("scaled_dot", "simple", True, 2, False, 3, None),
    ("scaled_dot", "gru", False, 0, True, None, 4),
]


def _case_id(case):
    form, core, feeding, fb, gate, out, units = case
    return f"{form}-{core}-feed{int(feeding)}-fb{fb}-gate{int(gate)}-out{out}-mu{units}"


def _layer(case, engine="auto", dtype=None, **kwargs):
    form, core, feeding, fb, gate, out, units = case
    return Feedback(
        6,
        feedback_units=fb,
        core=core,
        attention=gate,
        output_units=out,
        memory_attention=form,
        memory_units=units,
        input_feeding=feeding,
        return_sequences=True,
        return_state=True,
        return_trace=True,
        engine=engine,
        dtype=dtype,
        **kwargs,
    )


def _cfg(case):
    form, core, feeding, fb, gate, out, units = case
    return {
        "units": 6,
        "feedback_units": fb,
        "core": core,
        "attention": gate,
        "output_units": out,
        "memory_attention": form,
        "memory_units": units,
        "input_feeding": feeding,
    }


@pytest.mark.parametrize("engine", ["xla", "reference"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_memory_attention_matches_numpy(rng, case, engine):
    x, memory, memory_mask = _data(rng)
    mask = np.ones(x.shape[:2], bool)
    mask[0, 2] = False  # a masked step in the middle
    layer = _layer(case, engine)
    layer(x, memory=memory, memory_mask=memory_mask)
    randomise(layer, rng)
    outputs, *states, trace = layer(
        x, memory=memory, memory_mask=memory_mask, mask=mask
    )
    expected, expected_states, weights = attention_sequence(
        weights_by_name(layer),
        x.astype("float64"),
        memory.astype("float64"),
        _cfg(case),
        memory_mask=memory_mask,
        mask=mask,
    )
    assert relative_error(outputs, expected) < 1e-5
    assert len(states) == len(expected_states) == len(layer.state_names)
    for state, want in zip(states, expected_states):
        assert relative_error(state, want) < 1e-5
    assert trace["memory_alignment"].shape == (3, 5, 6)
    np.testing.assert_allclose(trace["memory_alignment"], weights, atol=1e-6)


def test_engines_agree_on_gradients(rng):
    case = CASES[1]
    x, memory, memory_mask = _data(rng)
    grads = {}
    for engine in ("xla", "reference"):
        keras.utils.set_random_seed(3)
        layer = _layer(case, engine)
        memory_t = tf.Variable(memory)
        with tf.GradientTape() as tape:
            outputs, *_ = layer(x, memory=memory_t, memory_mask=memory_mask)
            loss = tf.reduce_sum(tf.sin(outputs))
        grads[engine] = tape.gradient(loss, [*layer.trainable_weights, memory_t])
    for a, b in zip(grads["xla"], grads["reference"]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5)


@pytest.mark.parametrize("form", FORMS)
def test_gradients_match_finite_differences(rng, form):
    """Directional derivatives of a float64 loss, weights and memory."""
    case = (form, "gru", True, 2, True, 3, None)
    x, memory, memory_mask = _data(rng, batch=2, time=3, memory_time=4)
    x = tf.constant(x.astype("float64"))
    memory = tf.Variable(memory.astype("float64"))
    layer = _layer(case, "xla", dtype="float64")
    layer(x, memory=memory, memory_mask=memory_mask[:2, :4])
    randomise(layer, rng)
    variables = [*layer.trainable_weights, memory]

    def loss():
        outputs, *_ = layer(x, memory=memory, memory_mask=memory_mask[:2, :4])
        return tf.reduce_sum(tf.sin(outputs))

    check_directional_derivatives(loss, variables, rng, directions=2)


def test_masked_memory_gets_exactly_zero_weight(rng):
    x, memory, memory_mask = _data(rng)
    memory_mask[0] = False  # a row with no memory at all: zero weights, no NaN
    for form in FORMS:
        layer = _layer((form, "gru", True, 0, False, None, None))
        outputs, *_, trace = layer(x, memory=memory, memory_mask=memory_mask)
        weights = trace["memory_alignment"].numpy()
        assert np.all(
            weights[~np.broadcast_to(memory_mask[:, None], weights.shape)] == 0
        )
        np.testing.assert_allclose(weights[1:].sum(-1), 1.0, atol=1e-6)
        assert np.all(weights[0] == 0) and np.all(np.isfinite(outputs))


@pytest.mark.parametrize("engine", ["xla", "reference"])
def test_padded_memory_equals_each_example_at_its_length(rng, engine):
    x, memory, memory_mask = _data(rng)
    lengths = memory_mask.sum(1)
    # The padding holds garbage: it must not matter.
    memory = np.where(memory_mask[..., None], memory, 1e3).astype("float32")
    layer = _layer(CASES[0], engine)
    batched, *states, _ = layer(x, memory=memory, memory_mask=memory_mask)
    for i, length in enumerate(lengths):
        alone, *alone_states, _ = layer(x[i : i + 1], memory=memory[i : i + 1, :length])
        np.testing.assert_allclose(batched[i : i + 1], alone, atol=1e-5)
        for s, a in zip(states, alone_states):
            np.testing.assert_allclose(s[i : i + 1], a, atol=1e-5)


def test_step_equals_the_sequence_call(rng):
    x, memory, memory_mask = _data(rng)
    layer = _layer(CASES[3])
    expected, *expected_states, _ = layer(x, memory=memory, memory_mask=memory_mask)
    states = layer.get_initial_state(3)
    outputs = []
    for t in range(x.shape[1]):
        y, states = layer.step(x[:, t], states, memory=memory, memory_mask=memory_mask)
        outputs.append(y)
    np.testing.assert_allclose(np.stack(outputs, 1), expected, atol=1e-5)
    for s, e in zip(states, expected_states):
        np.testing.assert_allclose(s, e, atol=1e-5)


def _model(memory_attention="dot", units=8, vocabulary=7, memory_features=5):
    source = keras.Input((None, memory_features), name="memory")
    target = keras.Input((None,), dtype="int32", name="tokens")
    embedded = keras.layers.Embedding(vocabulary, 4)(target)
    decoded = Feedback(
        units,
        feedback_units=0,
        memory_attention=memory_attention,
        return_sequences=True,
        name="decoder",
    )(embedded, memory=source)
    logits = keras.layers.Dense(vocabulary, name="logits")(decoded)
    return keras.Model([source, target], logits)


def test_functional_model_trains_saves_and_reloads(rng, tmp_path):
    model = _model()
    memory = rng.standard_normal((4, 6, 5)).astype("float32")
    tokens = rng.integers(0, 7, (4, 3)).astype("int32")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit([memory, tokens], tokens, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict([memory, tokens], verbose=0),
        model.predict([memory, tokens], verbose=0),
        atol=1e-6,
    )
    config = model.get_layer("decoder").get_config()
    assert config["memory_attention"] == "dot" and config["input_feeding"] is True


def test_mixed_precision_matches_the_reference_engine(rng):
    x, memory, memory_mask = _data(rng)
    results = {}
    for engine in ("xla", "reference"):
        keras.utils.set_random_seed(5)
        layer = _layer(CASES[0], engine, dtype="mixed_bfloat16")
        outputs, *_ = layer(x, memory=memory, memory_mask=memory_mask)
        assert outputs.dtype == tf.bfloat16
        results[engine] = outputs.numpy().astype("float32")
    np.testing.assert_allclose(results["xla"], results["reference"], atol=3e-2)


# --- decoding -------------------------------------------------------------


def _decoder(rng, vocabulary=7, form="additive"):
    embedding = keras.layers.Embedding(vocabulary, 4)
    layer = Feedback(8, feedback_units=2, core="gru", memory_attention=form)
    projection = keras.layers.Dense(vocabulary)
    memory = rng.standard_normal((3, 6, 5)).astype("float32")
    memory_mask = np.ones((3, 6), bool)
    memory_mask[1, 2:] = False
    projection(layer(embedding(np.zeros((3, 1), "int32")), memory=memory))
    for part in (embedding, layer, projection):
        randomise(part, rng, scale=1.0)
    context = {"memory": tf.constant(memory), "memory_mask": tf.constant(memory_mask)}
    step = seq2seq.layer_step(layer, embedding, projection)
    return step, layer.get_initial_state(3), context


def _log_prob_of(step, states, context, tokens, length, start=1):
    """The sum of the log-probabilities of ``tokens[:length]``, recomputed
    by feeding them one by one (numpy softmax)."""
    total, previous = 0.0, tf.constant([start])
    for t in range(length):
        logits, states = step(previous, states, context)
        logits = logits.numpy()[0].astype("float64")
        log_probs = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        total += log_probs[tokens[t]]
        previous = tf.constant([tokens[t]])
    return total


def test_beam_width_one_is_greedy(rng):
    step, states, context = _decoder(rng)
    kwargs = dict(start_token=1, end_token=0, max_length=8, context=context)
    greedy = seq2seq.greedy_decode(step, states, **kwargs)
    beam = seq2seq.beam_search(step, states, beam_width=1, **kwargs)
    np.testing.assert_array_equal(beam.tokens[:, 0], greedy.tokens)
    np.testing.assert_array_equal(beam.lengths[:, 0], greedy.lengths)
    np.testing.assert_allclose(beam.scores[:, 0], greedy.scores, atol=1e-5)
    # Sampling restricted to the most probable token is greedy too.
    top1 = seq2seq.sample(step, states, top_k=1, seed=7, **kwargs)
    np.testing.assert_array_equal(top1.tokens, greedy.tokens)


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_beam_scores_are_the_penalised_log_probabilities(rng, weight):
    step, states, context = _decoder(rng)
    result = seq2seq.beam_search(
        step,
        states,
        start_token=1,
        end_token=0,
        max_length=6,
        beam_width=3,
        length_penalty_weight=weight,
        context=context,
    )
    greedy = seq2seq.greedy_decode(
        step, states, start_token=1, end_token=0, max_length=6, context=context
    )
    scores = result.scores.numpy()
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    for b in range(3):
        row = {
            k: tf.nest.map_structure(lambda v: v[b : b + 1], c)
            for k, c in context.items()
        }
        row_states = [s[b : b + 1] for s in states]
        for k in range(3):
            length = int(result.lengths[b, k])
            tokens = result.tokens[b, k].numpy()
            if 0 in tokens[: length - 1]:
                pytest.fail(f"end token inside a beam: {tokens}, length {length}")
            log_prob = _log_prob_of(step, row_states, row, tokens, length)
            penalty = ((5 + length) / 6) ** weight
            np.testing.assert_allclose(scores[b, k], log_prob / penalty, atol=1e-4)
        if weight == 0.0:  # the best beam is at least as probable as greedy
            assert scores[b, 0] >= float(greedy.scores[b]) - 1e-5


def test_sampling_is_seeded_and_filters(rng):
    step, states, context = _decoder(rng)
    kwargs = dict(start_token=1, end_token=0, max_length=6, context=context)
    a = seq2seq.sample(step, states, seed=1, **kwargs)
    b = seq2seq.sample(step, states, seed=1, **kwargs)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    draws = [seq2seq.sample(step, states, seed=s, **kwargs).tokens for s in range(6)]
    assert len({d.numpy().tobytes() for d in draws}) > 1
    # top_p so small that only the most probable token is left: greedy.
    greedy = seq2seq.greedy_decode(step, states, **kwargs)
    nucleus = seq2seq.sample(step, states, top_p=1e-6, seed=2, **kwargs)
    np.testing.assert_array_equal(nucleus.tokens, greedy.tokens)


def test_decoding_stops_at_the_end_token():
    # next token = token + 1 with probability 0.8; 0 (the end token) after 3.
    table = np.full((5, 5), 0.05)
    for token in range(5):
        table[token, (token + 1) % 4] = 0.8
    table = tf.constant(np.log(table / table.sum(1, keepdims=True)), tf.float32)

    def step(tokens, states, context):
        return tf.gather(table, tokens), states

    states = [tf.zeros([2, 1])]
    result = seq2seq.greedy_decode(
        step, states, start_token=1, end_token=0, max_length=6
    )
    np.testing.assert_array_equal(result.tokens, [[2, 3, 0, 0, 0, 0]] * 2)
    np.testing.assert_array_equal(result.lengths, [3, 3])
    beam = seq2seq.beam_search(
        step, states, start_token=1, end_token=0, max_length=6, beam_width=2
    )
    np.testing.assert_array_equal(beam.tokens[:, 0], result.tokens)


# --- bad input ------------------------------------------------------------


def test_bad_arguments_are_named(rng):
    x, memory, memory_mask = _data(rng)
    with pytest.raises(
        ValueError, match="`input_feeding`=True needs `memory_attention`"
    ):
        Feedback(4, input_feeding=True)
    with pytest.raises(ValueError, match="`memory_attention` must be one of"):
        Feedback(4, memory_attention="luong")
    with pytest.raises(ValueError, match="`memory_units`=3 needs `memory_attention`"):
        Feedback(4, memory_units=3)
    with pytest.raises(ValueError, match="memory_attention"):
        ConvFeedback2D(2, 3, memory_attention="dot")
    layer = Feedback(4, memory_attention="dot")
    with pytest.raises(ValueError, match="called without `memory`"):
        layer(x)
    with pytest.raises(
        ValueError, match=r"`memory` must have shape \(batch, memory_time, features\)"
    ):
        layer(x, memory=memory[:, 0])
    layer(x, memory=memory)
    with pytest.raises(
        ValueError, match=r"`memory` must have shape \(batch, memory_time, 5\)"
    ):
        layer(x, memory=memory[..., :3])
    with pytest.raises(ValueError, match="`memory_mask` must have shape"):
        layer(x, memory=memory, memory_mask=memory_mask[:, :4])
    with pytest.raises(
        ValueError,
        match="`memory` has batch size .*, the inputs have batch size .*: expected one row per input row",
    ):
        layer(x, memory=memory[:2])
    with pytest.raises(ValueError, match="called without `memory`"):
        layer(x)
    with pytest.raises(ValueError, match="called without `memory`"):
        layer.step(x[:, 0], layer.get_initial_state(3))
    with pytest.raises(ValueError, match="no memory attention"):
        Feedback(4)(x, memory=memory)


def test_bad_decoding_arguments_are_named():
    def step(tokens, states, context):
        return tf.zeros([tf.shape(tokens)[0], 4]), states

    states = [tf.zeros([2, 1])]
    common = dict(start_token=1, end_token=0, max_length=3)
    with pytest.raises(ValueError, match="`beam_width` must be a positive integer"):
        seq2seq.beam_search(step, states, beam_width=0, **common)
    with pytest.raises(ValueError, match="`max_length` must be a positive integer"):
        seq2seq.greedy_decode(step, states, start_token=1, end_token=0, max_length=0)
    with pytest.raises(ValueError, match="`top_p` must be a float in"):
        seq2seq.sample(step, states, top_p=1.5, **common)
    with pytest.raises(ValueError, match="`temperature` must be a positive float"):
        seq2seq.sample(step, states, temperature=0, **common)
    with pytest.raises(ValueError, match="`end_token`=9 is not a token"):
        seq2seq.greedy_decode(step, states, start_token=1, end_token=9, max_length=3)
    with pytest.raises(ValueError, match="`length_penalty_weight`"):
        seq2seq.beam_search(
            step, states, beam_width=2, length_penalty_weight=-1, **common
        )


def test_the_guide_runs(tmp_path, monkeypatch):
    """docs/seq2seq.md's examples, in order, in one namespace."""
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "seq2seq.md")) as f:
        guide = f.read()
    blocks = [block.split("```")[0] for block in guide.split("```python\n")[1:]]
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, "docs/seq2seq.md", "exec"), namespace)
    assert namespace["beams"].tokens.shape == (4, 3, 6)
    assert os.path.isfile(namespace["lite"])
