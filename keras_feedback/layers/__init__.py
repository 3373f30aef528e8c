"""Public layers of keras_feedback."""

from keras_feedback.layers._feedback import Feedback
from keras_feedback.layers._feedback import FeedbackCell

__all__ = ["Feedback", "FeedbackCell"]
