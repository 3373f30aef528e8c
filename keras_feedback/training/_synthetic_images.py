"""A small built-in image task: noisy line shapes, generated in numpy.

Each image (``size x size``, one channel) holds one shape drawn at a random
place, with random brightness, under Gaussian pixel noise and a few stray
short strokes. The class is the shape:

    0 "-"   a horizontal bar            1 "|"  a vertical bar
    2 "+"   a plus sign                 3 "L"  a corner (random rotation)
    4 "□"   a square outline

Telling them apart needs more than one local patch (a corner of the square is
an "L", its sides are bars), which is where iterations of a small
convolutional block help: each iteration widens what a pixel sees. Used by
``examples/iterative_feedback_images.py``, ``examples/equilibrium_images.py``
and the tests; ``load_image_data`` gives the examples this task or a TFDS
image dataset as the same arrays.
"""

import numpy as np

CLASS_NAMES = ("hbar", "vbar", "plus", "corner", "square")


def _draw(shape, size, arm, rng):
    canvas = np.zeros((size, size), np.float32)
    span = 2 * arm + 1
    top = rng.integers(0, size - span + 1)
    left = rng.integers(0, size - span + 1)
    rows = slice(top, top + span)
    cols = slice(left, left + span)
    middle_row, middle_col = top + arm, left + arm
    if shape == 0:
        canvas[middle_row, cols] = 1
    elif shape == 1:
        canvas[rows, middle_col] = 1
    elif shape == 2:
        canvas[middle_row, cols] = 1
        canvas[rows, middle_col] = 1
    elif shape == 3:
        patch = np.zeros((span, span), np.float32)
        patch[0, :] = 1
        patch[:, 0] = 1
        canvas[rows, cols] = np.rot90(patch, rng.integers(4))
    else:
        canvas[rows, cols] = 1
        canvas[top + 1 : top + span - 1, left + 1 : left + span - 1] = 0
    return canvas


def synthetic_images(num_examples, size=8, noise=0.35, strokes=1, seed=0):
    """Images of noisy line shapes and their class (see the module docstring).

    Args:
        num_examples: positive int.
        size: image side, at least 5.
        noise: standard deviation of the Gaussian pixel noise.
        strokes: number of stray 2-pixel strokes added to each image.
        seed: int, the generator's seed (same seed, same data).

    Returns:
        ``(images, labels)``: ``(num_examples, size, size, 1)`` float32 and
        ``(num_examples,)`` int32, the classes balanced.
    """
    if (
        isinstance(num_examples, bool)
        or not isinstance(num_examples, int)
        or (num_examples < 1)
    ):
        raise ValueError(
            f"Argument `num_examples` must be a positive integer, got {num_examples!r}"
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 5:
        raise ValueError(f"Argument `size` must be an integer >= 5, got {size!r}")
    rng = np.random.default_rng(seed)
    labels = np.arange(num_examples) % len(CLASS_NAMES)
    rng.shuffle(labels)
    images = np.zeros((num_examples, size, size), np.float32)
    arm = 2 if size < 9 else 3
    for i, label in enumerate(labels):
        image = _draw(label, size, arm, rng) * rng.uniform(0.6, 1.0)
        for _ in range(strokes):
            r, c = rng.integers(0, size - 1, 2)
            if rng.integers(2):
                image[r, c : c + 2] = np.maximum(image[r, c : c + 2], 0.8)
            else:
                image[r : r + 2, c] = np.maximum(image[r : r + 2, c], 0.8)
        images[i] = image
    images += rng.normal(0.0, noise, images.shape).astype(np.float32)
    return images[..., None], labels.astype(np.int32)


def load_image_data(name, data_dir, max_examples, seed=0):
    """``(x_train, y_train), (x_test, y_test), num_classes`` as numpy arrays:
    this task (``"synthetic"``) or a TFDS image dataset prepared in
    ``data_dir`` (``"mnist"``, ``"cifar10"``), pixels scaled to [0, 1]."""
    if name == "synthetic":
        count = max_examples or 4000
        train = synthetic_images(count, seed=seed)
        test = synthetic_images(max(count // 4, 50), seed=seed + 1)
        return train, test, len(CLASS_NAMES)
    from keras_feedback import datasets

    splits = []
    for split in ("train", "test"):
        cut = "" if max_examples is None else f"[:{max_examples}]"
        dataset, builder = datasets.load_raw(
            name, split + cut, data_dir=data_dir, as_supervised=True
        )
        images, labels = [], []
        for image, label in dataset.as_numpy_iterator():
            images.append(image)
            labels.append(label)
        images = np.stack(images).astype("float32") / 255.0
        splits.append((images, np.asarray(labels, "int32")))
    num_classes = builder.info.features["label"].num_classes
    return splits[0], splits[1], num_classes
