import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hypothesis  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_feedback  # noqa: E402
import keras_feedback.engine  # noqa: E402

# Property runs: CI's short form by default; `--hypothesis-profile=full` for
# the full run (see tests/test_engine_agreement.py).
hypothesis.settings.register_profile("ci", max_examples=6, deadline=None)
hypothesis.settings.register_profile("full", max_examples=200, deadline=None)
hypothesis.settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _isolated_keras_state():
    """Each test starts from the same seeds and the default dtype policy."""
    keras.utils.set_random_seed(1234)
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


@pytest.fixture(autouse=True)
def _auto_runs_the_fused_engine(monkeypatch):
    """``engine="auto"`` keeps the fused engine for the tests' small layers.

    Its size rule (``engine.choose``) runs calls as small as the tests' on
    the reference loop; the tests of every path (``fit``, distribution
    strategies, buckets, ...) are about the fused engine, which the rule
    would take out of them. ``test_engine_xla`` tests the rule itself.
    """
    from keras_feedback import engine

    monkeypatch.setattr(engine, "AUTO_MIN_STEP_WORK", 0)


# engine="auto"'s size rule as shipped (read at import, before any fixture
# changes it).
SHIPPED_AUTO_MIN_STEP_WORK = keras_feedback.engine.AUTO_MIN_STEP_WORK


@pytest.fixture
def auto_engine_as_shipped(monkeypatch):
    """``engine="auto"``'s size rule as shipped, in place of the override
    above: the test runs the engine a user's session would (the reference
    loop at the tests' small sizes)."""
    monkeypatch.setattr(
        keras_feedback.engine, "AUTO_MIN_STEP_WORK", SHIPPED_AUTO_MIN_STEP_WORK
    )


@pytest.fixture
def rng():
    return np.random.default_rng(0)
