"""Iterative feedback on images: a small conv block run K times on its own output.

A ``FeedbackLoop`` runs one small convolutional block (conv -> features ->
pooling -> classifier) for ``--iterations`` iterations with shared weights;
from the second iteration on, the block also reads its own feature maps of
the iteration before. Every iteration predicts the class; training supervises
all of them (``IterationLoss``), and the script prints the test accuracy at
every iteration: later iterations see further and do better.

Data: a built-in synthetic task by default (noisy line shapes on 8x8 images,
generated locally), or ``mnist`` / ``cifar10`` from TFDS when prepared in
``--data-dir`` (``tfds build mnist --data_dir DIR`` on a machine with network
access).

    python examples/iterative_feedback_images.py
    python examples/iterative_feedback_images.py --staged
    python examples/iterative_feedback_images.py --dataset mnist --data-dir DIR
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _example_utils as utils  # noqa: E402  (before TensorFlow: quiet start)
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_feedback  # noqa: E402
from keras_feedback.training._synthetic_images import load_image_data  # noqa: E402

EPILOG = """\
data: a built-in synthetic task made in numpy (4,000 training and 1,000
  held-out 8x8 images of 5 noisy line shapes; no download), or mnist/cifar10
  prepared in --data-dir.
runtime at defaults: about 30 s on a 2-core CPU.
trivial baseline: always predicting the training split's most frequent
  class, scored on the held-out test images (accuracy about 0.2).
writes: iterations.png (held-out accuracy at every iteration) and
  learning_curve.png into --out."""

DATASETS = ("synthetic", "mnist", "cifar10")


def build_model(image_shape, num_classes, iterations, filters, feedback):
    """Input -> FeedbackLoop(block) -> (batch, iterations, num_classes) logits."""
    channels = image_shape[-1]
    in_channels = channels + filters if feedback == "concat" else channels
    block_input = keras.Input(image_shape[:-1] + (in_channels,))
    h = keras.layers.Conv2D(
        filters, 3, padding="same", activation="relu", name="features"
    )(block_input)
    pooled = keras.layers.GlobalMaxPooling2D()(h)
    logits = keras.layers.Dense(num_classes, name="classifier")(pooled)
    block = keras.Model(block_input, logits, name="block")
    # The top-down pathway has weights of its own (the feedback part that
    # staged training trains separately): a 1x1 convolution of the features,
    # to the input's channels for "add" and "gate".
    projection = keras.layers.Conv2D(
        filters if feedback == "concat" else channels, 1, name="projection"
    )
    inputs = keras.Input(image_shape)
    loop = keras_feedback.layers.FeedbackLoop(
        block,
        iterations,
        feedback=feedback,
        feedback_from="features",
        projection=projection,
        return_iterations=True,
        name="feedback_loop",
    )
    return keras.Model(inputs, loop(inputs))


def iteration_accuracies(model, x, y, batch_size=256):
    """Accuracy of the prediction at every iteration."""
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return [
        float(np.mean(np.argmax(logits[:, k], -1) == y)) for k in range(logits.shape[1])
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", choices=DATASETS, default="synthetic")
    parser.add_argument("--data-dir", default=None, help="TFDS data folder")
    parser.add_argument(
        "--max-examples",
        type=int,
        default=None,
        help="use at most this many training images",
    )
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument(
        "--feedback", choices=("concat", "add", "gate"), default="concat"
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument(
        "--aux-weight",
        type=float,
        default=1.0,
        help="λ, weight of the per-iteration losses",
    )
    parser.add_argument(
        "--staged",
        action="store_true",
        help="train feedforward (loop off), then feedback, then all",
    )
    parser.add_argument("--jit", action="store_true", help="compile with XLA")
    parser.add_argument("--seed", type=int, default=0)
    utils.add_common_arguments(parser, "iterative_feedback_images")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    if args.dataset == "synthetic":
        print("data: the built-in synthetic line shapes (numpy, no download)")
        (x, y), (x_test, y_test), num_classes = load_image_data(
            args.dataset, args.data_dir, args.max_examples, args.seed
        )
    else:
        with utils.quiet_data(args.dataset, args.data_dir, generated=False):
            (x, y), (x_test, y_test), num_classes = load_image_data(
                args.dataset, args.data_dir, args.max_examples, args.seed
            )
    print(
        f"{args.dataset}: {len(x)} training and {len(x_test)} test images "
        f"{x.shape[1:]}, {num_classes} classes"
    )
    model = build_model(
        x.shape[1:], num_classes, args.iterations, args.filters, args.feedback
    )
    metrics = [
        keras_feedback.training.IterationMetric("sparse_categorical_accuracy", k)
        for k in range(args.iterations)
    ]
    model.compile(
        keras.optimizers.Adam(args.learning_rate),
        loss=keras_feedback.training.IterationLoss(
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            aux_weight=args.aux_weight,
        ),
        metrics=metrics,
        jit_compile=args.jit,
    )
    before = iteration_accuracies(model, x_test, y_test)
    fit = dict(batch_size=args.batch_size, verbose=2)
    history = None
    if args.staged:
        third = max(args.epochs // 3, 1)
        keras_feedback.training.staged_fit(
            model,
            [
                {"train": "feedforward", "epochs": third, "loop": False},
                {"train": "feedback", "epochs": third},
                {
                    "train": "all",
                    "epochs": max(args.epochs - 2 * third, 1),
                    "learning_rate": args.learning_rate / 3,
                },
            ],
            x,
            y,
            **fit,
        )
    else:
        history = model.fit(x, y, epochs=args.epochs, **fit).history
    after = iteration_accuracies(model, x_test, y_test)
    print("held-out accuracy per iteration:")
    for k, (a, b) in enumerate(zip(before, after), start=1):
        print(f"  iteration {k}: {b:.3f}  (before training {a:.3f})")
    baseline = utils.majority_accuracy(y, y_test)
    result = utils.report(
        f"accuracy at the last iteration ({args.iterations})",
        after[-1],
        baseline,
        "always predicting the most frequent training class",
        higher_is_better=True,
    )
    print(
        f"iterations help: {'yes' if after[-1] > after[0] else 'NO'} "
        f"(iteration 1 {after[0]:.3f}, iteration {args.iterations} {after[-1]:.3f})"
    )
    if not args.no_plot:
        plot_iterations(
            before, after, baseline, os.path.join(args.out, "iterations.png")
        )
        if history is not None:
            utils.plot_curves(
                os.path.join(args.out, "learning_curve.png"),
                {
                    f"iteration {k + 1} (training)": history[metric.name]
                    for k, metric in enumerate(metrics)
                    if metric.name in history
                },
                "training accuracy",
            )
    return {**result, "accuracy_before": before, "accuracy": after}


def plot_iterations(before, after, baseline, path):
    """Held-out accuracy at every iteration, before and after training."""
    plt = utils.pyplot()
    figure, axes = plt.subplots(figsize=(5, 3.5))
    iterations = range(1, len(after) + 1)
    axes.plot(iterations, after, marker="o", label="trained")
    axes.plot(iterations, before, marker=".", label="before training")
    axes.axhline(baseline, color="grey", linestyle="--", label="majority class")
    axes.set_xticks(list(iterations))
    axes.set_xlabel("iteration")
    axes.set_ylabel("held-out accuracy")
    axes.legend()
    utils.save(figure, path)


if __name__ == "__main__":
    try:
        main()
    except keras_feedback.datasets.DatasetNotPreparedError as error:
        raise SystemExit(str(error))
