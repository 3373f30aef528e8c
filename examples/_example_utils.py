"""What the examples share: a quiet start, where data goes, the baseline line, plots.

Not an example itself (``docs/examples/_generate.py`` skips files whose name
starts with ``_``). An example imports it before TensorFlow::

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _example_utils as utils  # noqa: E402  (before TensorFlow: quiet start)

Without ``--verbose`` on the command line, TensorFlow's C++ start-up logs
(``TF_CPP_MIN_LOG_LEVEL=3``, and what its import writes to file descriptor 2)
and TFDS's "Downloading and preparing dataset" lines (printed even for the
built-in datasets that are generated locally, not downloaded) are not shown;
the example says itself where the data is, as the ``keras-feedback`` command
does.
"""

import contextlib
import io
import os
import sys
import tempfile

VERBOSE = "--verbose" in sys.argv[1:]
VERBOSE_HELP = "show TensorFlow's and TFDS's own logs"


@contextlib.contextmanager
def quiet_stderr(enabled=True):
    """Sends what is written to file descriptor 2 (C++ logs, Python's
    stderr) to a discarded file while the block runs."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def quiet_start():
    """Imports TensorFlow and Keras without their C++ start-up logs."""
    if VERBOSE:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet_stderr():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()


quiet_start()


def add_common_arguments(parser, name):
    """``--out`` (the example's output folder), ``--no-plot`` and ``--verbose``."""
    parser.add_argument(
        "--out",
        default=os.path.join("keras_feedback_out", name),
        help="output folder (plots, files); default: %(default)s",
    )
    parser.add_argument(
        "--no-plot", action="store_true", help="do not write the plots into --out"
    )
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)


def tfds_folder(name, data_dir):
    """The folder TFDS keeps ``name`` in (``data_dir`` or TFDS's default)."""
    import tensorflow_datasets as tfds

    import keras_feedback  # noqa: F401  (registers the built-in datasets)

    try:
        return tfds.builder(name, data_dir=data_dir).data_dir
    except Exception:  # an unknown name: TFDS's error comes later, clearer
        return data_dir or os.path.join("~", "tensorflow_datasets")


@contextlib.contextmanager
def quiet_data(name, data_dir, verbose=VERBOSE, generated=True):
    """Opens TFDS data without TFDS's own lines, saying where the data is."""
    folder = tfds_folder(name, data_dir)
    if generated and not os.path.exists(folder):
        print(
            f"data: {name} is generated locally (once, no download) into {folder}",
            flush=True,
        )
    else:
        print(f"data: {name} in {folder}", flush=True)
    if verbose:
        yield
        return
    with quiet_stderr(), contextlib.redirect_stdout(io.StringIO()):
        yield


def number(value):
    """``value`` with 4 decimals, or 3 significant digits when it is tiny."""
    return f"{value:.4f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2e}"


def report(metric, value, baseline, baseline_name, higher_is_better=False):
    """Prints the held-out metric, the trivial baseline, and whether it beat it.

    Returns ``{"metric", "value", "baseline", "beats_baseline"}``.
    """
    value, baseline = float(value), float(baseline)
    beats = value > baseline if higher_is_better else value < baseline
    print(f"held-out {metric}: {number(value)}")
    print(f"trivial baseline ({baseline_name}): {number(baseline)}")
    print(
        f"beats the baseline: {'yes' if beats else 'NO'} "
        f"({number(value)} vs {number(baseline)}, "
        f"{'higher' if higher_is_better else 'lower'} is better)",
        flush=True,
    )
    return {
        "metric": metric,
        "value": value,
        "baseline": baseline,
        "beats_baseline": beats,
    }


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def plot_curves(path, curves, ylabel, baseline=None, baseline_name="baseline"):
    """Lines by epoch (``{label: values}``) and the baseline as a dashed line."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for label, values in curves.items():
        axes.plot(range(1, len(values) + 1), values, marker=".", label=label)
    if baseline is not None:
        axes.axhline(baseline, color="grey", linestyle="--", label=baseline_name)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.legend()
    axes.grid(alpha=0.3)
    save(figure, path)


def save(figure, path):
    """Writes ``figure`` to ``path`` (its folder made) and says where."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot().close(figure)
    print(f"plot: {path}")


def mse_of_mean(train_targets, test_targets):
    """MSE on the held-out targets of always predicting the training mean."""
    import numpy as np

    train_targets = np.asarray(train_targets, "float64")
    test_targets = np.asarray(test_targets, "float64")
    return float(np.mean((test_targets - train_targets.mean(axis=0)) ** 2))


def majority_accuracy(train_labels, test_labels):
    """Held-out accuracy of always predicting the training majority class."""
    import numpy as np

    values, counts = np.unique(np.asarray(train_labels), return_counts=True)
    return float(np.mean(np.asarray(test_labels) == values[np.argmax(counts)]))


def targets_of(dataset, limit=None):
    """The targets of a ``(inputs, targets)`` batched dataset, concatenated."""
    import numpy as np

    out, seen = [], 0
    for _, y in dataset:
        out.append(np.asarray(y))
        seen += len(out[-1])
        if limit is not None and seen >= limit:
            break
    return np.concatenate(out)[:limit]


def unigram_cross_entropy(train_targets, test_targets, num_classes, per_position):
    """Held-out cross-entropy (nats) of the training targets' class
    frequencies (add-one smoothed), one distribution per position or one
    for all: the best a model that ignores its inputs can do."""
    import numpy as np

    train = np.asarray(train_targets).astype("int64")
    test = np.asarray(test_targets).astype("int64")
    if per_position:
        counts = np.ones((train.shape[1], num_classes))
        for t in range(train.shape[1]):
            counts[t] += np.bincount(train[:, t], minlength=num_classes)
        p = counts / counts.sum(axis=1, keepdims=True)
        return float(-np.mean(np.log(p[np.arange(test.shape[1]), test])))
    counts = 1 + np.bincount(train.ravel(), minlength=num_classes)
    p = counts / counts.sum()
    return float(-np.mean(np.log(p[test.ravel()])))
