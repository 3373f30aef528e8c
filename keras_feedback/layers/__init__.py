"""Public layers of keras_feedback."""

from keras_feedback.layers._conv_feedback import ConvFeedback2D
from keras_feedback.layers._convert import convert
from keras_feedback.layers._equilibrium import Equilibrium
from keras_feedback.layers._feedback import Feedback
from keras_feedback.layers._feedback_cell import FeedbackCell
from keras_feedback.layers._feedback_loop import FeedbackLoop
from keras_feedback.layers._feedback_stack import FeedbackStack

__all__ = [
    "ConvFeedback2D",
    "Equilibrium",
    "Feedback",
    "FeedbackCell",
    "FeedbackLoop",
    "FeedbackStack",
    "convert",
]
