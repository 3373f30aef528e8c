"""Keras's own SimpleRNN, GRU, LSTM and Bidirectional tests, run against
``Feedback(core=..., feedback_units=0)`` (``helpers.keras_rnn_test_module``).

The test classes of the installed Keras's files are collected here under
new names; their methods build ``layers.SimpleRNN``/``GRU``/``LSTM``, which
the adapter makes ``Feedback`` layers of the matching core.
"""

import pytest
from helpers import KERAS_RNN_TEST_FILES
from helpers import keras_rnn_test_module


@pytest.fixture(autouse=True)
def _basics_as_shipped(request):
    """Keras's ``test_basics`` (``run_layer_test``: config, saving, shapes,
    a training step: the layer base's plumbing) runs with the size rule as
    shipped, which picks the reference loop at its sizes, as for a user
    (the fused engine there cost 24 s per class); every other test of the
    suite (correctness, masking, states, ...) keeps the fused engine."""
    if request.node.name.startswith("test_basics"):
        request.getfixturevalue("auto_engine_as_shipped")


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
