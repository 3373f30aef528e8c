"""Decoding with a step function: greedy, beam search and sampling.

Each decoder runs one ``tf.while_loop`` over output positions, compiled with
XLA by default, batched, and stopping at ``max_length`` or when every row
(every beam) has produced ``end_token``. The model is a step function

    step_fn(tokens, states, context) -> (logits, new_states)

``tokens`` ``(N,)`` int32 are the previous tokens, ``states`` any nest of
``(N, ...)`` tensors, ``context`` a nest of ``(N, ...)`` tensors that do not
change over the decode (the memory an attention decoder attends over, its
mask), ``logits`` ``(N, vocabulary)``. Beam search runs ``N = batch *
beam_width`` rows: it repeats states and context per beam once, and reorders
the states (never the context: beams of one example share it) after every
step.

keras-hub's samplers were measured against this interface and not used:
their ``BeamSampler`` has no length penalty and ranks beams by the raw sum of
log-probabilities, and they decode a prompt tensor of fixed length in place
(``docs/seq2seq.md``).
"""

import functools
from typing import Any
from typing import Callable
from typing import NamedTuple
from typing import Optional

import tensorflow as tf

from keras_feedback._api import public


@public("keras_feedback.seq2seq.DecodeResult", serializable=False)
class DecodeResult(NamedTuple):
    """What a decoder returns.

    Attributes:
        tokens: ``(batch, max_length)`` int32 (``(batch, beam_width,
            max_length)`` from ``beam_search``, best beam first); positions
            after a row's ``end_token`` hold ``end_token``.
        lengths: ``(batch,)`` (or ``(batch, beam_width)``) int32, the
            number of tokens up to and including ``end_token`` (or
            ``max_length`` when it never came).
        scores: ``(batch,)`` (or ``(batch, beam_width)``) float32: the sum of
            the chosen tokens' log-probabilities; for ``beam_search``
            divided by the length penalty. A beam search with fewer possible
            outputs than ``beam_width`` (a vocabulary smaller than the width
            and ``max_length`` 1, or tokens of probability 0) marks each
            beam it could not fill: score ``-inf``, length 0, every token
            ``end_token``.
    """

    tokens: tf.Tensor
    lengths: tf.Tensor
    scores: tf.Tensor


def check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Argument `{name}` must be a positive integer, got {value!r}")
    return value


def check_token(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"Argument `{name}` must be a non-negative integer (a token id), "
            f"got {value!r}"
        )
    return value


def _batch_size(states, context):
    for tensor in tf.nest.flatten((states, context)):
        if tensor is not None:
            return tf.shape(tensor)[0]
    raise ValueError(
        "Arguments `initial_states` and `context` hold no tensor: the batch "
        f"size is unknown. Got initial_states={states!r}, context={context!r}; "
        "expected a nest of (batch, ...) tensors in `initial_states` (a "
        "stateless step function can pass tf.zeros([batch, 0]))"
    )


@public("keras_feedback.seq2seq.length_penalty", serializable=False)
def length_penalty(lengths: Any, weight: float) -> tf.Tensor:
    """GNMT's length penalty ``((5 + length) / 6) ** weight`` (Wu et al.
    2016); 1 for ``weight = 0``."""
    lengths = tf.cast(lengths, tf.float32)
    return tf.pow((5.0 + lengths) / 6.0, tf.cast(weight, tf.float32))


def _log_probs(logits):
    return tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)


@functools.lru_cache(maxsize=64)
def _compiled(factory, jit_compile, *options):
    """The compiled decode function of ``factory(*options)``: one per step
    function and static options, so that later calls of the same shapes
    reuse its executable."""
    return tf.function(
        factory(*options),
        jit_compile=jit_compile,
        autograph=False,
        reduce_retracing=True,
    )


def _check_common(start_token, end_token, max_length, initial_states, context):
    check_token("start_token", start_token)
    check_token("end_token", end_token)
    check_positive("max_length", max_length)
    _batch_size(initial_states, context)


def _check_vocabulary(logits, end_token, start_token, top_k=None):
    """Every token argument must be a token of the logits' vocabulary."""
    size = logits.shape[-1]
    if logits.shape.rank != 2:
        raise ValueError(
            "`step_fn` must return logits of shape (batch, vocabulary), got "
            f"{tuple(logits.shape)}"
        )
    if size is None:
        return
    for name, token in (("start_token", start_token), ("end_token", end_token)):
        if token >= size:
            raise ValueError(
                f"Argument `{name}`={token} is not a token of the vocabulary of "
                f"{size} the step function's logits have: expected 0 <= "
                f"{name} < {size}"
            )
    if top_k is not None and top_k > size:
        raise ValueError(
            f"Argument `top_k`={top_k} is larger than the vocabulary of {size} "
            f"the step function's logits have: expected 1 <= top_k <= {size}"
        )


def _pick_loop(
    step_fn, states, context, start_token, end_token, max_length, pick, top_k=None
):
    """The loop of greedy decoding and sampling: ``pick(t, log_probs)``
    chooses a token per row."""
    batch = _batch_size(states, context)
    tokens = tf.fill([batch, max_length], tf.constant(end_token, tf.int32))
    previous = tf.fill([batch], tf.constant(start_token, tf.int32))
    finished = tf.zeros([batch], tf.bool)
    lengths = tf.zeros([batch], tf.int32)
    scores = tf.zeros([batch], tf.float32)
    positions = tf.range(max_length)

    def body(t, previous, states, tokens, finished, lengths, scores):
        logits, new_states = step_fn(previous, states, context)
        _check_vocabulary(logits, end_token, start_token, top_k)
        log_probs = _log_probs(logits)
        chosen = tf.cast(pick(t, log_probs), tf.int32)
        chosen = tf.where(finished, tf.constant(end_token, tf.int32), chosen)
        gained = tf.gather(log_probs, chosen, batch_dims=1)
        scores = scores + tf.where(finished, 0.0, gained)
        lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)
        at_t = tf.equal(positions, t)[None, :]
        tokens = tf.where(at_t, chosen[:, None], tokens)
        finished = tf.logical_or(finished, tf.equal(chosen, end_token))
        return t + 1, chosen, new_states, tokens, finished, lengths, scores

    def running(t, previous, states, tokens, finished, *_):
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))

    carry = (0, previous, states, tokens, finished, lengths, scores)
    _, _, _, tokens, _, lengths, scores = tf.while_loop(running, body, carry)
    return DecodeResult(tokens, lengths, scores)


@public("keras_feedback.seq2seq.greedy_decode", serializable=False)
def greedy_decode(
    step_fn: Callable,
    initial_states: Any,
    *,
    start_token: int,
    end_token: int,
    max_length: int,
    context: Any = None,
    jit_compile: bool = True,
) -> DecodeResult:
    """Greedy decoding: the most probable token at every step.

    Args:
        step_fn: ``step_fn(tokens, states, context) -> (logits, new_states)``
            (module docstring).
        initial_states: the decoder's states for the first step, a nest of
            ``(batch, ...)`` tensors.
        start_token: the token fed at the first step.
        end_token: the token that ends a row.
        max_length: positive int, the most tokens decoded per row.
        context: a nest of ``(batch, ...)`` tensors passed unchanged to every
            step (an attention decoder's memory and its mask), or None.
        jit_compile: compile the loop with XLA (default).

    Returns:
        A ``DecodeResult`` of ``(batch, max_length)`` tokens.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> from keras_feedback import seq2seq
    >>> table = tf.constant(np.log([[.1, .8, .1], [.1, .1, .8], [.8, .1, .1]]))
    >>> def step_fn(tokens, states, context):  # next token = token + 1
    ...     return tf.gather(table, tokens), states
    >>> result = seq2seq.greedy_decode(
    ...     step_fn, [tf.zeros([1, 1])], start_token=0, end_token=0, max_length=5)
    >>> result.tokens.numpy().tolist(), result.lengths.numpy().tolist()
    ([[1, 2, 0, 0, 0]], [3])
    """
    _check_common(start_token, end_token, max_length, initial_states, context)
    decode = _compiled(
        _greedy, jit_compile, step_fn, start_token, end_token, max_length
    )
    return decode(initial_states, context)


def _greedy(step_fn, start_token, end_token, max_length):
    def pick(t, log_probs):
        return tf.argmax(log_probs, axis=-1)

    def decode(states, context):
        return _pick_loop(
            step_fn, states, context, start_token, end_token, max_length, pick
        )

    return decode


def _filter_logits(log_probs, top_k, top_p):
    """``log_probs`` with the tokens outside the top ``k`` and outside the
    smallest set of probability ``>= top_p`` set to ``-inf``."""
    minimum = tf.constant(float("-inf"), log_probs.dtype)
    if top_k is not None:
        kth = tf.math.top_k(log_probs, k=top_k).values[:, -1:]
        log_probs = tf.where(log_probs < kth, minimum, log_probs)
    if top_p is not None:
        ordered = tf.sort(log_probs, axis=-1, direction="DESCENDING")
        probs = tf.exp(ordered)
        before = tf.cumsum(probs, axis=-1, exclusive=True)
        # The smallest threshold kept: the last sorted token whose
        # probability before it is still below top_p (the first always is).
        kept = tf.where(
            before < top_p, ordered, tf.constant(float("inf"), ordered.dtype)
        )
        threshold = tf.reduce_min(kept, axis=-1, keepdims=True)
        log_probs = tf.where(log_probs < threshold, minimum, log_probs)
    return log_probs


@public("keras_feedback.seq2seq.sample", serializable=False)
def sample(
    step_fn: Callable,
    initial_states: Any,
    *,
    start_token: int,
    end_token: int,
    max_length: int,
    context: Any = None,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    seed: int = 0,
    jit_compile: bool = True,
) -> DecodeResult:
    """Sampling: each token drawn from the step's distribution.

    The distribution is ``softmax(logits / temperature)``, restricted to the
    ``top_k`` most probable tokens and to the smallest set of tokens whose
    probability reaches ``top_p`` (nucleus sampling), renormalised. Draws
    are stateless: the same ``seed`` gives the same tokens.

    Args:
        step_fn, initial_states, start_token, end_token, max_length, context,
            jit_compile: as for ``greedy_decode``.
        temperature: positive float; below 1 sharpens, above 1 flattens.
        top_k: optional positive int.
        top_p: optional float in (0, 1].
        seed: int, the seed of the draws.

    Returns:
        A ``DecodeResult``; ``scores`` are the log-probabilities of the drawn
        tokens under the step's unfiltered distribution.
    """
    _check_common(start_token, end_token, max_length, initial_states, context)
    if isinstance(temperature, bool) or not (
        isinstance(temperature, (int, float)) and temperature > 0
    ):
        raise ValueError(
            f"Argument `temperature` must be a positive float, got {temperature!r}"
        )
    if top_k is not None:
        check_positive("top_k", top_k)
    if top_p is not None and (
        isinstance(top_p, bool)
        or not isinstance(top_p, (int, float))
        or not 0 < top_p <= 1
    ):
        raise ValueError(f"Argument `top_p` must be a float in (0, 1], got {top_p!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"Argument `seed` must be an integer, got {seed!r}")

    options = (step_fn, start_token, end_token, max_length, temperature, top_k, top_p)
    decode = _compiled(_sampling, jit_compile, *options)
    return decode(initial_states, context, tf.constant(seed, tf.int32))


def _sampling(step_fn, start_token, end_token, max_length, temperature, top_k, top_p):
    def decode(states, context, seed):
        def pick(t, log_probs):
            scaled = _filter_logits(log_probs / temperature, top_k, top_p)
            step_seed = tf.stack([seed, tf.cast(t, tf.int32)])
            return tf.random.stateless_categorical(scaled, 1, step_seed)[:, 0]

        return _pick_loop(
            step_fn, states, context, start_token, end_token, max_length, pick, top_k
        )

    return decode


def _same_shapes(new, old):
    """``new`` with the static shapes of ``old`` (what a loop's variables
    entered with; a gather by computed indices loses them)."""
    return tf.nest.map_structure(lambda n, o: tf.ensure_shape(n, o.shape), new, old)


def _repeat(tree, times):
    """Every tensor of ``tree`` with each row repeated ``times`` times."""
    if tree is None:
        return None
    return tf.nest.map_structure(lambda x: tf.repeat(x, times, axis=0), tree)


@public("keras_feedback.seq2seq.beam_search", serializable=False)
def beam_search(
    step_fn: Callable,
    initial_states: Any,
    *,
    start_token: int,
    end_token: int,
    max_length: int,
    beam_width: int,
    length_penalty_weight: float = 0.0,
    context: Any = None,
    jit_compile: bool = True,
) -> DecodeResult:
    """Beam search: the ``beam_width`` best partial outputs at every step.

    A beam's score is the sum of its tokens' log-probabilities divided by
    the length penalty ``((5 + length) / 6) ** length_penalty_weight`` (GNMT;
    ``length`` counts the tokens up to and including ``end_token``). At each
    step every unfinished beam is extended by every token, a finished beam
    only by ``end_token`` at no cost, and the ``beam_width`` best
    candidates by score are kept (what ``tfa.seq2seq.BeamSearchDecoder``
    did). Width 1 is greedy decoding.

    Args:
        step_fn, initial_states, start_token, end_token, max_length, context,
            jit_compile: as for ``greedy_decode`` (the states and context of
            ``batch`` rows: beam search repeats them per beam).
        beam_width: positive int.
        length_penalty_weight: non-negative float; 0 ranks by the sum of
            log-probabilities, larger values favour longer outputs.

    Returns:
        A ``DecodeResult`` with ``(batch, beam_width, max_length)`` tokens,
        best beam first, and the beams' penalised scores.
    """
    _check_common(start_token, end_token, max_length, initial_states, context)
    check_positive("beam_width", beam_width)
    if isinstance(length_penalty_weight, bool) or not (
        isinstance(length_penalty_weight, (int, float)) and length_penalty_weight >= 0
    ):
        raise ValueError(
            "Argument `length_penalty_weight` must be a non-negative float, got "
            f"{length_penalty_weight!r}"
        )
    options = (step_fn, start_token, end_token, max_length, beam_width)
    decode = _compiled(_beam, jit_compile, *options, float(length_penalty_weight))
    return decode(initial_states, context)


def _beam(step_fn, start_token, end_token, max_length, width, length_penalty_weight):
    def decode(states, context):
        batch = _batch_size(states, context)
        states = _repeat(states, width)
        context = _repeat(context, width)
        end = tf.constant(end_token, tf.int32)
        # Only the first beam is live at the start: the others would repeat it.
        first = tf.one_hot(0, width, on_value=0.0, off_value=float("-inf"))
        log_probs = tf.tile(first[None], [batch, 1])
        tokens = tf.fill([batch, width, max_length], end)
        previous = tf.fill([batch * width], tf.constant(start_token, tf.int32))
        finished = tf.zeros([batch, width], tf.bool)
        lengths = tf.zeros([batch, width], tf.int32)
        positions = tf.range(max_length)
        rows = tf.range(batch)[:, None] * width

        def body(t, previous, states, tokens, finished, lengths, log_probs):
            tokens_in, finished_in, lengths_in = tokens, finished, lengths
            logits, new_states = step_fn(previous, states, context)
            _check_vocabulary(logits, end_token, start_token)
            step_log_probs = _log_probs(logits)
            vocabulary = tf.shape(step_log_probs)[-1]
            step_log_probs = tf.reshape(step_log_probs, [batch, width, -1])
            # A finished beam continues with end_token only, at no cost.
            only_end = tf.where(tf.equal(tf.range(vocabulary), end), 0.0, float("-inf"))
            step_log_probs = tf.where(
                finished[..., None], only_end[None, None], step_log_probs
            )
            total = log_probs[..., None] + step_log_probs  # (B, W, V)
            new_lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)
            penalty = length_penalty(new_lengths, length_penalty_weight)
            scores = tf.reshape(total / penalty[..., None], [batch, -1])
            _, best = tf.math.top_k(scores, k=width)  # (B, W), best first
            parent = best // vocabulary
            token = best % vocabulary
            flat = tf.reshape(rows + parent, [-1])
            # The static shapes the loop's variables entered with.
            new_states = tf.nest.map_structure(lambda s: tf.gather(s, flat), new_states)
            log_probs = tf.ensure_shape(
                tf.gather(tf.reshape(total, [batch, -1]), best, batch_dims=1),
                log_probs.shape,
            )
            lengths = tf.gather(new_lengths, parent, batch_dims=1)
            was_finished = tf.gather(finished, parent, batch_dims=1)
            tokens = tf.gather(tokens, parent, batch_dims=1)
            at_t = tf.equal(positions, t)[None, None, :]
            tokens = tf.where(at_t, token[..., None], tokens)
            finished = tf.logical_or(was_finished, tf.equal(token, end))
            new = (tf.reshape(token, [-1]), new_states, tokens, finished, lengths)
            old = (previous, states, tokens_in, finished_in, lengths_in)
            return (t + 1, *_same_shapes(new, old), log_probs)

        def running(t, previous, states, tokens, finished, *_):
            return tf.logical_and(
                t < max_length, tf.logical_not(tf.reduce_all(finished))
            )

        carry = (0, previous, states, tokens, finished, lengths, log_probs)
        _, _, _, tokens, _, lengths, log_probs = tf.while_loop(running, body, carry)
        scores = log_probs / length_penalty(lengths, length_penalty_weight)
        # Ranked as the last step's selection left them; sorted again so that
        # equal scores keep that order whatever the loop's last step was.
        order = tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True)
        tokens = tf.gather(tokens, order, batch_dims=1)
        lengths = tf.gather(lengths, order, batch_dims=1)
        scores = tf.gather(scores, order, batch_dims=1)
        # Fewer hypotheses than beams: the unreachable beams are marked
        # (score -inf, length 0, only end_token), never a real beam repeated.
        reachable = tf.math.is_finite(scores)
        tokens = tf.where(reachable[..., None], tokens, end)
        lengths = tf.where(reachable, lengths, 0)
        return DecodeResult(tokens, lengths, scores)

    return decode


@public("keras_feedback.seq2seq.layer_step", serializable=False)
def layer_step(
    layer: Any,
    embedding: Optional[Callable] = None,
    projection: Optional[Callable] = None,
) -> Callable:
    """The step function of a decoder made of an embedding, a feedback layer
    and an output projection, for the decoders of this module.

    ``step_fn(tokens, states, context)`` embeds the tokens, runs
    ``layer.step`` with ``memory=context["memory"]`` and
    ``memory_mask=context.get("memory_mask")`` (when ``context`` is a dict)
    and projects the output to logits.

    Args:
        layer: a ``keras_feedback.layers.Feedback`` layer (built).
        embedding: the token embedding (a ``keras.layers.Embedding``), or
            None when the step takes the tokens themselves.
        projection: the output layer (a ``keras.layers.Dense`` to the
            vocabulary), or None when the layer's output are the logits.

    Returns:
        The step function.
    """

    def step_fn(tokens, states, context):
        inputs = tokens if embedding is None else embedding(tokens)
        memory = {}
        if isinstance(context, dict):
            memory = {
                "memory": context.get("memory"),
                "memory_mask": context.get("memory_mask"),
            }
        outputs, new_states = layer.step(inputs, states, **memory)
        return (outputs if projection is None else projection(outputs)), new_states

    return step_fn
