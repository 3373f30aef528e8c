"""Character-level language modelling: Keras's LSTM against Feedback layers.

The corpus is real text every machine here has without network: 13 modules
of the Python 3.11.7 standard library's own ``.py`` sources (``CORPUS``,
concatenated in that order: 1,002,221 characters, all ASCII), pinned by
their sha256; the script refuses to run on another corpus (``--smoke`` runs
anyway, with a note). Its first 90 % is the training split, the next 5 %
validation and the last 5 % test (contiguous, as
``keras_feedback.datasets.CharText`` splits). Characters are bytes; the
vocabulary is the 96 bytes seen in training plus one id for any other.

Every model is Embedding(97, 32) -> recurrent layer(s) (one sequence out)
-> Dense(97) at every step, trained on random windows of T=100 characters
(batch 64) with Adam (clipnorm 1.0) and sparse categorical cross-entropy,
compiled with Keras's defaults (``jit_compile="auto"``: no XLA on a CPU;
``Feedback`` and ``FeedbackStack`` run their own compiled loop).
Rows, each with the units (equal per layer for the stacks) that bring the
whole model to within 2 % of the parameters of the Keras LSTM(256) model
(323,969):

- ``lstm``: ``keras.layers.LSTM`` (1 layer);
- ``lstm2``: two stacked ``keras.layers.LSTM``;
- ``feedback-off``: ``Feedback(core="lstm", feedback_units=0)`` (Keras's
  LSTM math on this project's engine);
- ``feedback-on``: ``Feedback(core="lstm", feedback_units=round(units / 2))``
  (``--feedback-ratio``);
- ``stack-none``, ``stack-gated``, ``stack-ungated``: two-layer
  ``FeedbackStack(core="lstm", feedback_units=0)`` with ``top_down=None``,
  ``"gated"`` and ``"ungated"`` (skipped, with a note, while
  ``keras_feedback.layers`` has no ``FeedbackStack``).

Protocol: each row's learning rate is chosen from one grid (1e-3, 3e-3,
1e-2) by validation BPC after ``--grid-budget`` seconds of training (the
first seed); then every seed trains for ``--budget`` seconds of wall clock
with that rate and the test BPC (cross-entropy in bits per character over
tiled test windows of T characters, each from a zero state) is reported:
mean and min-max over the seeds, beside the trivial baseline (the unigram
model of the training split's character frequencies). The clock starts
after each run's first training step: tracing and compiling are excluded
for every row alike (the first step's seconds are printed); evaluation is
outside the budget too.

The default run (7 rows, 2 seeds, 180 s per model and seed, 3 rates x 20 s
of grid per row) trains for 7 x (3 x 20 + 2 x 180) s = 49 min; matching
the parameter counts, compiling and evaluating add about 5 s per run (35
runs) and 30 s: about 53 min on a 2-core CPU (5 rows and 38 min while
``keras_feedback.layers`` has no ``FeedbackStack``).

``--tasks`` adds shorter rows (the first seed, 60 s per model, learning rate
3e-3 for every row, no grid; parameters matched to a Keras LSTM(96) model,
within 2 %) on the copy-memory task (delay 100, T=120: test cross-entropy
per step against the memoryless baseline 10 ln 8 / 120; 10,000 training and
1,000 test sequences) and the adding problem (T=200: test MSE against
always predicting 1), both generated with ``keras_feedback.datasets``'
generators: 7 x 2 x 60 s = 14 min of training and about 3 min more.

    python benchmarks/char_lm.py                    # the char LM, ~55 min
    python benchmarks/char_lm.py --tasks            # and the tasks, ~1 h 12 min
    python benchmarks/char_lm.py --smoke --tasks    # a smoke run (3 rows), ~1 min
    python benchmarks/char_lm.py --rows lstm feedback-on --budget 60 --seeds 0
"""

import argparse
import hashlib
import math
import os
import platform
import sys
import sysconfig
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_feedback  # noqa: E402
from keras_feedback.datasets import _adding_problem  # noqa: E402
from keras_feedback.datasets import _char_text  # noqa: E402
from keras_feedback.datasets import _copy_memory  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _limits  # noqa: E402

# The corpus: these files of the standard library, concatenated in this
# order (each with the first 16 hex digits of its own sha256, to name the
# files that differ), and the sha256 of the whole.
CORPUS = (
    ("argparse.py", "dc1eba8adfdf6159"),
    ("ast.py", "c513073798bdbf3c"),
    ("configparser.py", "4a70cecccb55031a"),
    ("contextlib.py", "d732c045bc745099"),
    ("dataclasses.py", "4b7e1c99ebea53b5"),
    ("datetime.py", "cc9bcb0f1c2f44e1"),
    ("difflib.py", "0c6afc23568d55b3"),
    ("enum.py", "84fc683aa71da233"),
    ("inspect.py", "d55ac82f84e5c939"),
    ("shutil.py", "d0dbfcd96ba06684"),
    ("subprocess.py", "2ff641d58f869649"),
    ("threading.py", "2c4c1db159e11788"),
    ("typing.py", "115d96e966bf35cf"),
)
CORPUS_SHA256 = "786dc4a261a2c2433b155b1ac8a385c5dff2abc5e4bdaf3fd799bc5fd52f331e"
CORPUS_SOURCE = "Python 3.11.7"

ROWS = {
    "lstm": "Keras LSTM (1 layer)",
    "lstm2": "Keras LSTM (2 layers)",
    "feedback-off": "Feedback(lstm), feedback off",
    "feedback-on": "Feedback(lstm), feedback_units = units/2",
    "stack-none": "FeedbackStack(lstm, 2 layers), top_down=None",
    "stack-gated": 'FeedbackStack(lstm, 2 layers), top_down="gated"',
    "stack-ungated": 'FeedbackStack(lstm, 2 layers), top_down="ungated"',
}
STACK_ROWS = ("stack-none", "stack-gated", "stack-ungated")
# A smoke run's rows: one of each kind of layer (Keras's, Feedback,
# FeedbackStack).
SMOKE_ROWS = ("lstm", "feedback-on", "stack-gated")


class CorpusMismatch(ValueError):
    """The standard library's files are not the pinned corpus."""


def log(message):
    """Progress, on stderr: stdout keeps the tables."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The corpus and its splits


def read_corpus(directory=None, files=CORPUS, expected=CORPUS_SHA256):
    """The pinned files' bytes, concatenated; raises ``CorpusMismatch`` when
    a file is missing or the sha256 of the whole is not ``expected`` (None:
    not checked)."""
    directory = directory or sysconfig.get_paths()["stdlib"]
    parts, differ, missing = [], [], []
    for name, short in files:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            missing.append(name)
            continue
        with open(path, "rb") as f:
            data = f.read()
        parts.append(data)
        if hashlib.sha256(data).hexdigest()[:16] != short:
            differ.append(name)
    if missing:
        raise CorpusMismatch(
            f"the corpus's files {', '.join(missing)} are not in {directory} "
            f"(the pinned corpus is {CORPUS_SOURCE}'s standard library)"
        )
    data = b"".join(parts)
    found = hashlib.sha256(data).hexdigest()
    if expected is not None and found != expected:
        raise CorpusMismatch(
            f"the corpus is not the pinned one: expected sha256 {expected}, "
            f"found {found} ({len(data):,} bytes read from {directory}, Python "
            f"{platform.python_version()}; the pinned corpus is "
            f"{CORPUS_SOURCE}'s standard library; files that differ: "
            f"{', '.join(differ) or 'none by their own hash'}). Figures on "
            "another corpus are not comparable with the recorded ones."
        )
    return data


class Corpus:
    """The splits as ids over the bytes seen in training (+1 unknown id)."""

    def __init__(self, data):
        self.data = data
        tokens = np.frombuffer(data, np.uint8)
        bounds = {
            split: (int(a * len(tokens)), int(b * len(tokens)))
            for split, (a, b) in _char_text.SPLIT_FRACTIONS.items()
        }
        train = tokens[slice(*bounds["train"])]
        seen = np.unique(train)
        self.unknown = len(seen)
        self.vocab = len(seen) + 1
        self.table = np.full(256, self.unknown, np.int32)
        self.table[seen] = np.arange(len(seen), dtype=np.int32)
        self.splits = {
            split: self.table[tokens[slice(*bound)]] for split, bound in bounds.items()
        }

    def windows(self, split, length):
        """Tiled ``(inputs, targets)`` windows of ``split`` (validation, test)."""
        inputs, targets = _char_text.windows(self.data, length, split)
        return self.table[inputs], self.table[targets]

    def sampler(self, length, batch, rng):
        """Random training windows: a function giving ``(inputs, targets)``."""
        train = self.splits["train"]
        span = np.arange(length + 1)

        def sample():
            chunks = train[
                rng.integers(0, len(train) - length - 1, batch)[:, None] + span
            ]
            return chunks[:, :-1], chunks[:, 1:]

        return sample

    def ngram_bpc(self, order):
        """Test BPC of the add-one smoothed unigram (1) or bigram (2) model
        of the training split."""
        train, test = self.splits["train"], self.splits["test"]
        v = self.vocab
        if order == 1:
            counts = np.bincount(train, minlength=v) + 1.0
            prob = counts[test] / counts.sum()
        else:
            pairs = np.zeros((v, v))
            np.add.at(pairs, (train[:-1], train[1:]), 1.0)
            pairs += 1.0
            prob = pairs[test[:-1], test[1:]] / pairs[test[:-1]].sum(-1)
        return float(-np.mean(np.log2(prob)))


# ---------------------------------------------------------------------------
# Models and equal parameter counts


def has_stack():
    return hasattr(keras_feedback.layers, "FeedbackStack")


def recurrent(row, units, return_sequences, feedback_ratio):
    """The recurrent part of ``row`` at ``units`` (per layer): a list of layers."""
    layers = keras_feedback.layers
    if row == "lstm":
        return [keras.layers.LSTM(units, return_sequences=return_sequences)]
    if row == "lstm2":
        return [
            keras.layers.LSTM(units, return_sequences=True),
            keras.layers.LSTM(units, return_sequences=return_sequences),
        ]
    if row in ("feedback-off", "feedback-on"):
        feedback = max(1, round(units * feedback_ratio)) if row == "feedback-on" else 0
        return [
            layers.Feedback(
                units,
                feedback_units=feedback,
                core="lstm",
                return_sequences=return_sequences,
            )
        ]
    top_down = {"stack-none": None, "stack-gated": "gated", "stack-ungated": "ungated"}
    return [
        layers.FeedbackStack(
            [units, units],
            core="lstm",
            feedback_units=0,
            top_down=top_down[row],
            return_sequences=return_sequences,
        )
    ]


def lm_model(row, units, cfg):
    """Embedding -> recurrent -> Dense(vocab) logits at every step."""
    inputs = keras.Input((cfg.length,), dtype="int32")
    h = keras.layers.Embedding(cfg.vocab, cfg.embed)(inputs)
    for layer in recurrent(row, units, True, cfg.feedback_ratio):
        h = layer(h)
    return keras.Model(inputs, keras.layers.Dense(cfg.vocab)(h))


def copy_model(row, units, cfg):
    inputs = keras.Input((cfg.copy_delay + 2 * _copy_memory.NUM_COPIED,), dtype="int32")
    h = keras.layers.Embedding(_copy_memory.INPUT_VOCABULARY, cfg.task_embed)(inputs)
    for layer in recurrent(row, units, True, cfg.feedback_ratio):
        h = layer(h)
    return keras.Model(inputs, keras.layers.Dense(_copy_memory.NUM_CLASSES)(h))


def adding_model(row, units, cfg):
    inputs = keras.Input((cfg.adding_length, 2))
    h = inputs
    for layer in recurrent(row, units, False, cfg.feedback_ratio):
        h = layer(h)
    return keras.Model(inputs, keras.layers.Dense(1)(h))


def match_units(count, target, tolerance, hint=8):
    """The units whose parameter count ``count(units)`` (growing with
    units) is nearest ``target``, searched from ``hint`` (a guess); raises
    when it is off by more than ``tolerance`` (a fraction)."""
    cache = {}

    def c(units):
        if units not in cache:
            cache[units] = count(units)
        return cache[units]

    low, high = max(1, hint // 2), max(2, hint)
    while low > 1 and c(low) > target:
        low = max(1, low // 2)
    while c(high) < target:
        low, high = high, high * 2
    while low < high:  # the fewest units with at least ``target``
        mid = (low + high) // 2
        if c(mid) < target:
            low = mid + 1
        else:
            high = mid
    candidates = [u for u in (low - 2, low - 1, low, low + 1) if u >= 1]
    best = min(candidates, key=lambda u: abs(c(u) - target))
    if abs(c(best) / target - 1) > tolerance:
        raise ValueError(
            f"no units give {target:,} parameters within {tolerance:.0%}: "
            f"nearest {c(best):,} at units={best}"
        )
    return best, c(best)


def sizes(rows, build, target_units, tolerance):
    """``{row: (units, parameters)}`` and the target (the Keras LSTM's count)."""

    def count(row):
        return lambda units: build(row, units).count_params()

    target = count("lstm")(target_units)
    out = {}
    for row in rows:
        if row == "lstm":
            out[row] = (target_units, target)
        else:
            out[row] = match_units(count(row), target, tolerance, target_units)
        log(f"  {row}: units {out[row][0]}, {out[row][1]:,} parameters")
    keras.backend.clear_session()
    return out, target


# ---------------------------------------------------------------------------
# Training for a wall-clock budget


def train_for(model, sample, budget):
    """Train steps until ``budget`` seconds have passed after the first
    step (its tracing and compiling excluded). Returns (steps, first step's
    seconds, diverged)."""
    start = time.perf_counter()
    loss = model.train_on_batch(*sample())
    first = time.perf_counter() - start
    steps, start = 1, time.perf_counter()
    while time.perf_counter() - start < budget:
        loss = model.train_on_batch(*sample())
        steps += 1
        if steps % 50 == 0 and not np.isfinite(float(loss)):
            return steps, first, True
    return steps, first, not np.isfinite(float(loss))


def predict_padded(model, x, batch):
    """``model``'s outputs for ``x``, in batches of exactly ``batch`` rows
    (the last one padded: one input shape, one compilation)."""
    outputs = []
    for i in range(0, len(x), batch):
        part = x[i : i + batch]
        pad = batch - len(part)
        if pad:
            part = np.concatenate([part, np.repeat(part[:1], pad, 0)])
        outputs.append(np.asarray(model.predict_on_batch(part))[: batch - pad])
    return np.concatenate(outputs)


def cross_entropy(logits, targets):
    """Mean cross-entropy in nats of integer ``targets`` under ``logits``."""
    logits = logits.astype(np.float64)
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return float(-np.take_along_axis(logp, targets[..., None], -1).mean())


def compiled(model, rate, loss):
    model.compile(keras.optimizers.Adam(rate, clipnorm=1.0), loss)
    return model


def lm_run(row, units, rate, seed, budget, split, corpus, cfg):
    """Train ``row`` for ``budget`` s; its BPC on ``split``."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = compiled(
        lm_model(row, units, cfg),
        rate,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    sample = corpus.sampler(cfg.length, cfg.batch, np.random.default_rng(seed))
    steps, first, diverged = train_for(model, sample, budget)
    x, y = cfg.windows[split]
    bpc = math.nan
    if not diverged:
        bpc = cross_entropy(predict_padded(model, x, 256), y) / math.log(2)
    log(
        f"  {row} lr={rate:g} seed={seed}: {steps} steps in {budget:g} s "
        f"(first step {first:.1f} s), {split} BPC {bpc:.4f}"
    )
    return bpc, steps, first


# ---------------------------------------------------------------------------
# Printing


def span(values, digits):
    low, high = min(values), max(values)
    if low == high:
        return f"{low:.{digits}f}"
    return f"{low:.{digits}f}–{high:.{digits}f}"


def int_span(values):
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}–{high}"


# ---------------------------------------------------------------------------
# The benchmark


def char_lm(cfg, rows, corpus):
    cfg.vocab = corpus.vocab
    cfg.windows = {
        split: corpus.windows(split, cfg.length) for split in ("validation", "test")
    }
    unigram, bigram = corpus.ngram_bpc(1), corpus.ngram_bpc(2)
    log("Matching parameter counts:")
    size, target = sizes(
        rows, lambda row, units: lm_model(row, units, cfg), cfg.units, cfg.tolerance
    )

    log("Learning-rate grid on the validation split:")
    grid = {}
    for row in rows:
        units = size[row][0]
        grid[row] = [
            lm_run(
                row,
                units,
                rate,
                cfg.seeds[0],
                cfg.grid_budget,
                "validation",
                corpus,
                cfg,
            )[0]
            for rate in cfg.rates
        ]
    chosen = {
        row: cfg.rates[
            int(np.argmin([b if np.isfinite(b) else np.inf for b in grid[row]]))
        ]
        for row in rows
    }

    log("Final runs on the test split:")
    final = {}
    for row in rows:
        final[row] = [
            lm_run(
                row, size[row][0], chosen[row], seed, cfg.budget, "test", corpus, cfg
            )
            for seed in cfg.seeds
        ]

    source = "slice of the " if cfg.smoke else ""
    print(
        f"Character-level LM, learning rate chosen by validation BPC after "
        f"{cfg.grid_budget:g} s of training per rate (seed {cfg.seeds[0]}; a "
        f"{source}{CORPUS_SOURCE} standard library corpus of {len(corpus.data):,} "
        f"characters; Adam, clipnorm 1.0, B={cfg.batch}, T={cfg.length})"
    )
    rates = " | ".join(f"lr {r:g}" for r in cfg.rates)
    print(f"| model | units | parameters | {rates} | chosen |")
    print("|---|---:|---:|" + "---:|" * len(cfg.rates) + "---:|")
    for row in rows:
        bpcs = " | ".join(f"{b:.3f}" for b in grid[row])
        print(
            f"| {ROWS[row]} | {size[row][0]} | {size[row][1]:,} | {bpcs} "
            f"| {chosen[row]:g} |"
        )
    print()
    seeds = ", ".join(str(s) for s in cfg.seeds)
    print(
        f"Character-level LM, test BPC after {cfg.budget:g} s of training per "
        f"model and seed (the clock starts after the first step, its compiling "
        f"excluded for every row alike), seeds {seeds}; parameters matched to "
        f"Keras LSTM({cfg.units}), {target:,}, within {cfg.tolerance:.0%}"
    )
    print(
        "| model | units | parameters | vs LSTM | learning rate | training steps "
        "| first step (s, excluded) | test BPC, mean | min–max "
        "| unigram baseline | beats the baseline |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        bpcs = [r[0] for r in final[row]]
        beaten = sum(b < unigram for b in bpcs)
        beat = (
            "yes"
            if beaten == len(bpcs)
            else ("no" if beaten == 0 else f"{beaten} of {len(bpcs)} seeds")
        )
        print(
            f"| {ROWS[row]} | {size[row][0]} | {size[row][1]:,} "
            f"| {size[row][1] / target - 1:+.1%} | {chosen[row]:g} "
            f"| {int_span([r[1] for r in final[row]])} "
            f"| {span([r[2] for r in final[row]], 1)} | {np.mean(bpcs):.3f} "
            f"| {span(bpcs, 3)} | {unigram:.3f} | {beat} |"
        )
    print(
        f"BPC: cross-entropy in bits per character over tiled test windows of "
        f"{cfg.length} characters, each from a zero state. Unigram baseline: the "
        f"training split's character frequencies (add-one smoothed); the bigram "
        f"model scores {bigram:.3f}. Vocabulary: the {corpus.vocab - 1} characters "
        f"seen in training and one unknown id."
    )
    print()


def task_runs(name, rows, cfg, build, data, loss, evaluate):
    """Equal-parameter rows on one task: {row: (units, params, [(metric,
    extra, steps)])}."""
    log(f"{name}: matching parameter counts:")
    size, target = sizes(rows, build, cfg.task_units, cfg.tolerance)
    (x, y), (x_test, y_test) = data
    out = {}
    for row in rows:
        results = []
        for seed in cfg.task_seeds:
            keras.backend.clear_session()
            keras.utils.set_random_seed(seed)
            model = compiled(build(row, size[row][0]), cfg.task_rate, loss)
            rng = np.random.default_rng(seed)

            def sample(rng=rng):
                idx = rng.integers(0, len(x), cfg.batch)
                return x[idx], y[idx]

            steps, first, _ = train_for(model, sample, cfg.task_budget)
            metric, extra = evaluate(predict_padded(model, x_test, 250), y_test)
            log(
                f"  {row} seed={seed}: {steps} steps (first {first:.1f} s), {metric:.4f}"
            )
            results.append((metric, extra, steps))
        out[row] = (*size[row], results)
    return out, target


def verdict(value, baseline):
    return "yes" if value < 0.5 * baseline else ("barely" if value < baseline else "no")


def tasks(cfg, rows):
    seeds = ", ".join(str(s) for s in cfg.task_seeds)
    common = (
        f"{cfg.task_budget:g} s of training per model and seed (seeds {seeds}; "
        f"the first step's compiling excluded; Adam lr {cfg.task_rate:g}, clipnorm "
        f"1.0, B={cfg.batch}; parameters matched to Keras LSTM({cfg.task_units})"
    )
    rng = np.random.default_rng(0)

    # Copy memory: cross-entropy per step; and accuracy on the copied symbols.
    delay = cfg.copy_delay
    steps = delay + 2 * _copy_memory.NUM_COPIED
    train = _copy_memory.generate(cfg.task_train, delay, rng)
    test = _copy_memory.generate(cfg.task_test, delay, rng)
    baseline = _copy_memory.memoryless_loss(delay)

    def copy_metrics(logits, targets):
        tail = slice(-_copy_memory.NUM_COPIED, None)
        accuracy = float(np.mean(logits[:, tail].argmax(-1) == targets[:, tail]))
        return cross_entropy(logits, targets), accuracy

    results, target = task_runs(
        f"Copy memory (delay {delay})",
        rows,
        cfg,
        lambda row, units: copy_model(row, units, cfg),
        (train, test),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        copy_metrics,
    )
    print(
        f"Copy memory, delay {delay} (T={steps}): test cross-entropy per step "
        f"after {common}, {target:,})"
    )
    print(
        "| model | units | parameters | training steps | test cross-entropy, mean "
        "| min–max | copied symbols right | memoryless baseline | beats the baseline |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        units, params, runs = results[row]
        ce = [r[0] for r in runs]
        print(
            f"| {ROWS[row]} | {units} | {params:,} | {int_span([r[2] for r in runs])} "
            f"| {np.mean(ce):.4f} | {span(ce, 4)} | {np.mean([r[1] for r in runs]):.1%} "
            f"| {baseline:.4f} | {verdict(np.mean(ce), baseline)} |"
        )
    print(
        f"Memoryless baseline: blanks, then a uniform guess among the "
        f"{_copy_memory.NUM_SYMBOLS} symbols, 10 ln {_copy_memory.NUM_SYMBOLS} / "
        f"{steps} nats per step (chance on the copied symbols: "
        f"{1 / _copy_memory.NUM_SYMBOLS:.1%}). Yes: under half the baseline; "
        "barely: under it."
    )
    print()

    # The adding problem: MSE of the sum.
    length = cfg.adding_length
    x, y, _ = _adding_problem.generate(cfg.task_train, length, rng)
    x_test, y_test, _ = _adding_problem.generate(cfg.task_test, length, rng)
    baseline = float(np.mean((y_test - 1.0) ** 2))

    def mse(outputs, targets):
        return float(np.mean((outputs[:, 0] - targets[:, 0]) ** 2)), None

    results, target = task_runs(
        f"Adding problem (T={length})",
        rows,
        cfg,
        lambda row, units: adding_model(row, units, cfg),
        ((x, y[:, None]), (x_test, y_test[:, None])),
        "mse",
        mse,
    )
    print(f"The adding problem, T={length}: test MSE after {common}, {target:,})")
    print(
        "| model | units | parameters | training steps | test MSE, mean | min–max "
        "| baseline (always 1) | beats the baseline |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        units, params, runs = results[row]
        errors = [r[0] for r in runs]
        print(
            f"| {ROWS[row]} | {units} | {params:,} | {int_span([r[2] for r in runs])} "
            f"| {np.mean(errors):.4f} | {span(errors, 4)} | {baseline:.4f} "
            f"| {verdict(np.mean(errors), baseline)} |"
        )
    print(
        f"{cfg.task_train:,} training and {cfg.task_test:,} held-out test "
        "sequences. Yes: under half the baseline; barely: under it."
    )
    print()


def plan(cfg, rows):
    """What the run will train for, in words."""
    parts = []
    if not cfg.no_char_lm:
        per_row = len(cfg.rates) * cfg.grid_budget + len(cfg.seeds) * cfg.budget
        parts.append(
            f"the char LM, {len(rows)} row(s) x ({len(cfg.rates)} rates x "
            f"{cfg.grid_budget:g} s + {len(cfg.seeds)} seed(s) x {cfg.budget:g} s) "
            f"= {len(rows) * per_row / 60:.1f} min"
        )
    if cfg.tasks:
        seconds = 2 * len(rows) * len(cfg.task_seeds) * cfg.task_budget
        parts.append(
            f"the tasks, {len(rows)} row(s) x 2 tasks x {len(cfg.task_seeds)} "
            f"seed(s) x {cfg.task_budget:g} s = {seconds / 60:.1f} min"
        )
    return (
        "Plan: training for "
        + "; ".join(parts)
        + "; plus matching parameter counts, compiling and evaluating (outside "
        "the budgets: about 5 s per run on a 2-core CPU at the defaults)."
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--budget", type=float, default=180.0, help="seconds per model and seed"
    )
    parser.add_argument(
        "--grid-budget",
        type=float,
        default=20.0,
        help="seconds per model and learning rate of the grid",
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=list(ROWS),
        default=None,
        metavar="ROW",
        help=f"rows among {', '.join(ROWS)} (default: all; --smoke: "
        f"{', '.join(SMOKE_ROWS)})",
    )
    parser.add_argument("--units", type=int, default=256, help="the Keras LSTM's")
    parser.add_argument("--embed", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=100, help="T")
    parser.add_argument("--feedback-ratio", type=float, default=0.5)
    parser.add_argument("--tasks", action="store_true", help="also the task rows")
    parser.add_argument("--no-char-lm", action="store_true", help="only the tasks")
    parser.add_argument("--task-budget", type=float, default=60.0)
    parser.add_argument("--task-seeds", type=int, default=1, help="how many")
    parser.add_argument("--task-rate", type=float, default=3e-3)
    parser.add_argument("--task-units", type=int, default=96)
    parser.add_argument(
        "--smoke", action="store_true", help="a smoke run (under a minute)"
    )
    cfg = parser.parse_args(argv)
    cfg.tolerance, cfg.task_embed = 0.02, 16
    cfg.copy_delay, cfg.adding_length = 100, 200
    cfg.task_train, cfg.task_test = 10_000, 1_000
    if cfg.smoke:
        cfg.budget, cfg.grid_budget, cfg.rates, cfg.seeds = 0.5, 0.3, [1e-2], [0]
        cfg.units, cfg.embed, cfg.batch, cfg.length = 16, 8, 16, 20
        cfg.task_budget, cfg.task_units, cfg.task_embed = 0.5, 24, 4
        cfg.copy_delay, cfg.adding_length = 10, 20
        cfg.task_train, cfg.task_test = 256, 100
        cfg.tolerance = 0.15
    cfg.task_seeds = cfg.seeds[: cfg.task_seeds]
    rows = list(dict.fromkeys(cfg.rows or (SMOKE_ROWS if cfg.smoke else ROWS)))
    tf.get_logger().setLevel("ERROR")  # retracing notes: one model per run

    gpus = len(tf.config.list_physical_devices("GPU"))
    print(f"Machine: {_limits.machine()}" + (f", {gpus} GPU(s)" if gpus else ""))
    print()
    if not has_stack() and any(row in STACK_ROWS for row in rows):
        rows = [row for row in rows if row not in STACK_ROWS]
        print(
            "The FeedbackStack rows are skipped: keras_feedback.layers has no "
            "FeedbackStack yet."
        )
        print()
    print(plan(cfg, rows))
    print()
    start = time.perf_counter()
    if not cfg.no_char_lm:
        try:
            data = read_corpus()
        except CorpusMismatch as error:
            if not cfg.smoke:
                raise SystemExit(f"char_lm.py: {error}") from None
            print(f"Smoke run on another corpus: {error}")
            print()
            data = read_corpus(expected=None)
        if cfg.smoke:
            data = data[:60_000]
        char_lm(cfg, rows, Corpus(data))
    if cfg.tasks:
        tasks(cfg, rows)
    print(f"Total time: {(time.perf_counter() - start) / 60:.1f} min.")


if __name__ == "__main__":
    main()
