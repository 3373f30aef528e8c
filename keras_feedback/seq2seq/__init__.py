"""Sequence-to-sequence decoding: greedy, beam search and sampling.

An attention decoder is a ``keras_feedback.layers.Feedback`` layer with
``memory_attention`` (called as ``layer(x, memory=encoder_outputs)``); these
functions decode with its public ``step`` (``layer_step``) or any step
function ``step_fn(tokens, states, context) -> (logits, new_states)``.
See ``docs/seq2seq.md``.
"""

from keras_feedback.seq2seq._decoding import DecodeResult
from keras_feedback.seq2seq._decoding import beam_search
from keras_feedback.seq2seq._decoding import greedy_decode
from keras_feedback.seq2seq._decoding import layer_step
from keras_feedback.seq2seq._decoding import length_penalty
from keras_feedback.seq2seq._decoding import sample
from keras_feedback.seq2seq._encoder_decoder import EncoderDecoder

__all__ = [
    "DecodeResult",
    "EncoderDecoder",
    "beam_search",
    "greedy_decode",
    "layer_step",
    "length_penalty",
    "sample",
]
