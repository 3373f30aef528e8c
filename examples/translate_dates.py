"""Translate dates to ISO 8601 with an attention decoder fed back its output.

"Wednesday, March 3, 2021", "03-Mar-2021", "3.3.2021", ... -> "2021-03-03".
An encoder (a bidirectional ``Feedback`` GRU over the characters) writes a
memory; the decoder, a ``Feedback`` layer with ``memory_attention``, attends
over it at every step and feeds its attentional state back into the next
step (Luong's input feeding). Trained with teacher forcing, then decoded
greedily and with beam search (``keras_feedback.seq2seq``); the score is the
exact-match accuracy of whole dates on the test split. ``--compare`` also
trains the same model without memory attention (its decoder made as large,
so that it has at least as many parameters), which only has the encoder's
final state to go on. Data: the built-in TFDS dataset ``date_translation``
(generated locally), or ``--dataset`` a TFDS translation dataset prepared in
``--data-dir``. The alignment plot (the decoder's attention over the source
characters of one test date) is written into ``--out``.

    python examples/translate_dates.py
    python examples/translate_dates.py --compare
"""

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _example_utils as utils  # noqa: E402  (before TensorFlow: quiet start)
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_feedback  # noqa: E402
from keras_feedback import seq2seq  # noqa: E402
from keras_feedback.datasets import CharVocabulary  # noqa: E402
from keras_feedback.layers import Feedback  # noqa: E402

EPILOG = """\
data: the built-in TFDS dataset date_translation, generated locally (no
  download) into --data-dir (default ~/tensorflow_datasets) on first use.
runtime at defaults: about 3 min on a 2-core CPU (--compare: about twice).
trivial baseline: always answering the most frequent training target date,
  scored by exact match on the held-out test split (about 0).
writes: alignment.png into --out (or --plot PATH)."""


def build_model(task, units=64, memory_attention="additive", decoder_units=None):
    """The encoder-decoder for training (teacher forcing: inputs ``source``
    ids and ``decoder_inputs`` ids, output the logits of the next target id)
    and, sharing its layers, the ``seq2seq.EncoderDecoder`` that decodes."""
    decoder_units = decoder_units or 2 * units
    source = keras.Input((None,), dtype="int32", name="source")
    previous = keras.Input((None,), dtype="int32", name="decoder_inputs")
    embedded = keras.layers.Embedding(
        task.source_vocabulary.size, 32, mask_zero=True, name="source_embedding"
    )(source)
    memory, forward, backward = keras.layers.Bidirectional(
        Feedback(units, feedback_units=0, return_sequences=True, return_state=True),
        name="encoder",
    )(embedded)
    start = keras.layers.Dense(decoder_units, activation="tanh", name="bridge")(
        keras.layers.Concatenate()([forward, backward])
    )
    decoder = Feedback(
        decoder_units,
        feedback_units=16,
        memory_attention=memory_attention,
        return_sequences=True,
        name="decoder",
    )
    # The bridge gives h; the other states (c, the attentional state) start
    # at zero.
    zero = keras.ops.zeros_like(start[:, :1])
    initial = [start] + [
        keras.ops.tile(zero, [1, n]) for n in decoder.cell.state_size[1:]
    ]
    target_embedding = keras.layers.Embedding(
        task.target_vocabulary.size, 32, name="target_embedding"
    )
    memory_mask = keras.ops.not_equal(source, 0)
    attended = {}
    if memory_attention:
        attended = {"memory": memory, "memory_mask": memory_mask}
    outputs = decoder(target_embedding(previous), initial_state=initial, **attended)
    projection = keras.layers.Dense(task.target_vocabulary.size, name="logits")
    model = keras.Model([source, previous], projection(outputs), name="translator")
    encoded = [memory, memory_mask, *initial] if memory_attention else initial
    translator = seq2seq.EncoderDecoder(
        keras.Model(source, encoded, name="encoder_model"),
        decoder,
        target_embedding,
        projection,
        start_token=CharVocabulary.START,
        end_token=CharVocabulary.END,
    )
    return model, translator


def translate(model, source, max_length, beam_width=None, batch_size=500):
    """Decoded target ids ``(N, max_length)`` of ``source`` ids by an
    ``EncoderDecoder``: greedy, or the best beam of ``beam_width``."""
    decoded = []
    for begin in range(0, len(source), batch_size):
        rows = source[begin : begin + batch_size]
        if beam_width:
            result = model.beam_search(rows, max_length, beam_width=beam_width)
            decoded.append(result.tokens[:, 0].numpy())
        else:
            decoded.append(model.greedy_decode(rows, max_length).tokens.numpy())
    return np.concatenate(decoded)


def exact_match(task, decoded, targets):
    """The fraction of examples whose decoded text equals the target text."""
    vocabulary = task.target_vocabulary
    got = vocabulary.decode(decoded)
    want = vocabulary.decode(targets)
    return float(np.mean([a == b for a, b in zip(got, want)]))


def train(task, train_arrays, args, memory_attention, decoder_units=None):
    keras.utils.set_random_seed(args.seed)
    model, translator = build_model(task, args.units, memory_attention, decoder_units)
    model.compile(
        keras.optimizers.Adam(args.learning_rate, clipnorm=1.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
    )
    source, inputs, targets = train_arrays
    began = time.perf_counter()
    model.fit(
        (source, inputs),
        targets,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=2,
    )
    return model, translator, time.perf_counter() - began


def evaluate(task, translator, test_arrays, beam_width):
    """Exact-match accuracy on ``test_arrays``: greedy, and beam search; and
    the greedy decoding of the first example."""
    source, _, targets = test_arrays
    length = targets.shape[1]
    greedy_ids = translate(translator, source, length)
    greedy = exact_match(task, greedy_ids, targets)
    beam = translate(translator, source, length, beam_width)
    return greedy, exact_match(task, beam, targets), greedy_ids[:1]


def plot_alignment(translator, task, source, decoded, path):
    """The attention weights of one decoded example as a heat map."""
    plt = utils.pyplot()
    # ``decoded`` comes from the evaluation: decoding one row again would
    # trace the compiled decoder for a new batch size.
    # The decoder again over the decoded tokens, with its trace.
    decoder = translator.decoder
    tracing = Feedback.from_config({**decoder.get_config(), "return_trace": True})
    states, context = translator.encode(source[:1])
    inputs = np.concatenate([[[CharVocabulary.START]], decoded[:, :-1]], 1)
    embedded = translator.embedding(inputs)
    tracing(embedded, initial_state=states, **context)
    tracing.set_weights(decoder.get_weights())
    _, trace = tracing(embedded, initial_state=states, **context)
    weights = trace["memory_alignment"][0].numpy()
    source_text = task.source_vocabulary.decode(source[:1])[0]
    target_text = [*task.target_vocabulary.decode(decoded)[0], "</s>"]
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.imshow(weights[: len(target_text), : len(source_text)], cmap="viridis")
    axes.set_xticks(range(len(source_text)), list(source_text))
    axes.set_yticks(range(len(target_text)), list(target_text))
    axes.set_xlabel("source")
    axes.set_ylabel("decoded")
    axes.set_title("attention of the decoder over the source (one test date)")
    utils.save(figure, path)


def parameters(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--units", type=int, default=64, help="encoder units")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument(
        "--attention", default="additive", choices=["additive", "dot", "scaled_dot"]
    )
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument(
        "--max-examples", type=int, default=None, help="training examples"
    )
    parser.add_argument("--test-examples", type=int, default=None)
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also train the model without memory attention",
    )
    parser.add_argument(
        "--plot", default=None, help="the alignment plot's path (default: in --out)"
    )
    parser.add_argument(
        "--dataset",
        default="date_translation",
        help="a TFDS translation dataset prepared in --data-dir (two text features)",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data folder")
    parser.add_argument("--seed", type=int, default=0)
    utils.add_common_arguments(parser, "translate_dates")
    args = parser.parse_args(argv)

    train_split = (
        "train" if args.max_examples is None else f"train[:{args.max_examples}]"
    )
    test_split = (
        "test" if args.test_examples is None else f"test[:{args.test_examples}]"
    )
    builtin = args.dataset == "date_translation"
    with utils.quiet_data(args.dataset, args.data_dir, generated=builtin):
        if builtin:
            load = keras_feedback.datasets.load_dates
            train_arrays, task = load(train_split, data_dir=args.data_dir)
            test_arrays, _ = load(test_split, data_dir=args.data_dir)
        else:
            load = keras_feedback.datasets.load_translation
            train_arrays, task = load(args.dataset, train_split, data_dir=args.data_dir)
            test_arrays, _ = load(args.dataset, test_split, data_dir=args.data_dir)
    print(
        f"{len(train_arrays.source_ids)} training and "
        f"{len(test_arrays.source_ids)} held-out pairs"
    )

    model, translator, seconds = train(task, train_arrays, args, args.attention)
    greedy, beam, first = evaluate(task, translator, test_arrays, args.beam_width)
    result = {
        "parameters": parameters(model),
        "train_seconds": seconds,
        "greedy": greedy,
        "beam": beam,
    }
    print(
        f"memory attention ({args.attention}): {result['parameters']} parameters, "
        f"trained in {seconds:.0f} s; exact match greedy {greedy:.4f}, "
        f"beam {args.beam_width} {beam:.4f}"
    )
    targets = task.target_vocabulary.decode(test_arrays.decoder_targets)
    common, _ = collections.Counter(
        task.target_vocabulary.decode(train_arrays.decoder_targets)
    ).most_common(1)[0]
    majority = float(np.mean([t == common for t in targets]))
    result.update(
        utils.report(
            f"exact match (beam {args.beam_width})",
            beam,
            majority,
            f"always answering the most frequent training date, {common!r}",
            higher_is_better=True,
        )
    )
    if not args.no_plot:
        path = args.plot or os.path.join(args.out, "alignment.png")
        plot_alignment(translator, task, test_arrays.source_ids, first, path)
    if args.compare:
        # The decoder's size that gives the model without memory attention at
        # least the parameters of the one with it.
        units = 2 * args.units
        while (
            parameters(build_model(task, args.units, None, units)[0])
            < result["parameters"]
        ):
            units += 4
        baseline, untended, seconds = train(task, train_arrays, args, None, units)
        greedy, beam, _ = evaluate(task, untended, test_arrays, args.beam_width)
        result["baseline"] = {
            "parameters": parameters(baseline),
            "train_seconds": seconds,
            "greedy": greedy,
            "beam": beam,
        }
        print(
            f"no memory attention: {parameters(baseline)} parameters, trained in "
            f"{seconds:.0f} s; exact match greedy {greedy:.4f}, "
            f"beam {args.beam_width} {beam:.4f}"
        )
    result["model"], result["translator"] = model, translator
    return result


if __name__ == "__main__":
    main()
