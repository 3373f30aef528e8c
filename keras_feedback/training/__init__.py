"""Training utilities: auxiliary losses, staged training, callbacks, distribution."""

from keras_feedback.training import distribute
from keras_feedback.training._auxiliary import IterationLoss
from keras_feedback.training._auxiliary import IterationMetric
from keras_feedback.training._gradient_flow import GradientFlow
from keras_feedback.training._plots import plot_trace
from keras_feedback.training._staged import Stage
from keras_feedback.training._staged import staged_fit
from keras_feedback.training._staged import weight_groups

__all__ = [
    "GradientFlow",
    "IterationLoss",
    "IterationMetric",
    "Stage",
    "distribute",
    "plot_trace",
    "staged_fit",
    "weight_groups",
]
