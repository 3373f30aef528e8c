"""Keras's own SimpleRNN, GRU, LSTM and Bidirectional tests, run against
``Feedback(core=..., feedback_units=0)`` (``helpers.keras_rnn_test_module``).

The test classes of the installed Keras's files are collected here under
new names; their methods build ``layers.SimpleRNN``/``GRU``/``LSTM``, which
the adapter makes ``Feedback`` layers of the matching core.
"""

from helpers import KERAS_RNN_TEST_FILES
from helpers import keras_rnn_test_module

# Tests of Keras-private internals, left out (set to None, so not collected):
# `Bidirectional._can_attempt_fused_lstm` / `_fused_gru` test
# `isinstance(layer, keras.layers.LSTM / GRU)` for Keras's own fused kernels.
PRIVATE = {
    "bidirectional_test.py": (
        "test_fused_lstm_eligibility",
        "test_fused_gru_eligibility",
    )
}


def _collect():
    collected = {}
    for filename in KERAS_RNN_TEST_FILES:
        module = keras_rnn_test_module(filename)
        left_out = dict.fromkeys(PRIVATE.get(filename, ()))
        stem = "".join(part.title() for part in filename[: -len("_test.py")].split("_"))
        for name, value in vars(module).items():
            if isinstance(value, type) and name.endswith("Test"):
                new = f"TestKeras{stem}{name}"
                collected[new] = type(
                    new, (value,), {"__module__": __name__, **left_out}
                )
    return collected


globals().update(_collect())
