"""Builds the small model the deployment notes use and saves it as .keras.

    python export/make_example.py OUT_DIR

writes ``OUT_DIR/feedback.keras``: ``Input(None, 3) -> Feedback(8, gru,
feedback_units=4) -> Dense(2)`` with fixed random weights. Its step states are
``feedback_h`` (8) and ``feedback_c`` (4), the names the request examples in
``export/requests/`` use.
"""

import os
import sys

import keras

import keras_feedback


def build_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, 3), name="x")
    hidden = keras_feedback.layers.Feedback(
        8, core="gru", feedback_units=4, return_sequences=True, name="feedback"
    )(inputs)
    outputs = keras.layers.Dense(2, name="head")(hidden)
    return keras.Model(inputs, outputs, name="feedback_example")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__)
        return 2
    os.makedirs(argv[0], exist_ok=True)
    path = os.path.join(argv[0], "feedback.keras")
    build_model().save(path)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
