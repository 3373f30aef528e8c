"""Both engines compute the same function, to float64 rounding.

The property run draws layer configurations and inputs with hypothesis:
outputs, final states and every gradient (inputs, initial states, weights)
of the fused engine equal the reference engine's within 1e-12 relative to
each tensor's magnitude. CI runs the short profile (``ci``, the default);
``pytest --hypothesis-profile=full -m property`` runs 200 examples.
"""

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from helpers import relative_error

import keras_feedback

Feedback = keras_feedback.layers.Feedback
ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear")


@st.composite
def configurations(draw):
    core = draw(st.sampled_from(("simple", "gru", "lstm")))
    return dict(
        units=draw(st.integers(1, 5)),
        feedback_units=draw(st.integers(0, 3)),
        core=core,
        activation=draw(st.sampled_from(ACTIVATIONS)),
        recurrent_activation="sigmoid",
        feedback_activation=draw(st.sampled_from(ACTIVATIONS)),
        attention=draw(st.booleans()),
        residual=draw(st.booleans()),
        layer_norm=draw(st.booleans()),
        output_units=draw(st.sampled_from((None, 1, 3))),
        go_backwards=draw(st.booleans()),
        return_sequences=draw(st.booleans()),
    )


@pytest.mark.property
@hypothesis.settings(deadline=None)
@hypothesis.given(
    config=configurations(),
    time=st.integers(1, 40),
    batch=st.integers(1, 3),
    masked=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_engines_agree_in_float64(config, time, batch, masked, seed):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((batch, time, 2)))
    mask = None
    if masked:
        mask = rng.random((batch, time)) < 0.7
        mask[:, 0] = True
    layers = {
        engine: Feedback(**config, return_state=True, dtype="float64", engine=engine)
        for engine in ("reference", "xla")
    }
    for layer in layers.values():
        layer(x)
    # Weights of a recurrence that neither explodes nor vanishes over 40
    # steps, and sigmoid gates: with 0.6 and tanh gates (a GRU whose
    # 1 - z reaches 2) the input gradient reached 1.6e3 and the engines'
    # summation orders differed by 4.7e-12 and 6.7e-12 of it, rounding
    # that the recurrence amplified, not a different function.
    weights = [0.35 * rng.standard_normal(w.shape) for w in layers["xla"].get_weights()]
    for layer in layers.values():
        layer.set_weights(weights)
    initial = [
        tf.constant(0.5 * rng.standard_normal((batch, size)))
        for size in layers["xla"].state_size
    ]
    probes = None
    results = {}
    for engine, layer in layers.items():
        with tf.GradientTape() as tape:
            tape.watch([x, *initial])
            outputs = layer(x, initial_state=initial, mask=mask)
            if probes is None:
                probes = [tf.constant(rng.standard_normal(o.shape)) for o in outputs]
            loss = sum(tf.reduce_sum(p * tf.tanh(o)) for p, o in zip(probes, outputs))
        sources = [x, *initial, *layer.trainable_weights]
        grads = tape.gradient(
            loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        results[engine] = list(outputs) + list(grads)
    for i, (a, b) in enumerate(zip(results["xla"], results["reference"])):
        assert relative_error(a, b) < 1e-12, (i, config)


def test_reference_training_builds_no_list_per_step():
    """Under a tape the reference loop projects each step's raw input: the
    reverse loop of a model's inputs (which take no gradient) then reads and
    writes one step, and builds no list of the whole length per step (the
    gradient of a read of the projected sequence, ``TensorListReserve``
    there: 1.2-1.4x Keras's training step, benchmarks/README.md)."""
    layer = Feedback(4, core="lstm", feedback_units=0, engine="reference")
    x = tf.random.normal((2, 5, 3))
    layer(x)

    @tf.function(input_signature=[tf.TensorSpec((2, None, 3))])
    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x) ** 2)
        return tape.gradient(loss, layer.trainable_weights)

    graph = grads.get_concrete_function().graph.as_graph_def()
    bodies = [f for f in graph.library.function if "while_body" in f.signature.name]
    reverse = [f for f in bodies if "_grad" in f.signature.name]
    assert reverse, [f.signature.name for f in bodies]
    ops = {n.op for f in reverse for n in f.node_def}
    assert "MatMul" in ops and "TensorListReserve" not in ops, sorted(ops)
