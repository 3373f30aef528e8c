"""Datasets: built-in tasks as TFDS builders and a loader for TFDS datasets.

Importing ``keras_feedback`` registers the builders with TFDS, so that
``tfds.load("adding_problem/T100")`` works; they generate their data
locally and never download anything.

- ``adding_problem``: the adding problem (Le et al. 2015); configs
  ``T50``, ``T100``, ``T200``, ``T500``.
- ``copy_memory``: the copy-memory task (Arjovsky et al. 2016); configs
  ``delay10``, ``delay50``, ``delay100``, ``delay200``.
- ``char_text``: character-level language modelling on your own ``.txt``
  files (``manual_dir``); configs ``L64``, ``L128``, ``L256``.
- ``date_translation``: dates in 16 human-readable formats to ISO 8601, a
  sequence-to-sequence task.

``load`` turns these, or any TFDS dataset with a sequence, text or image
feature, into batches of ``(sequence, target)``; ``load_raw`` opens a
dataset's TFDS examples as they are. Both work offline and say how to
prepare a dataset that is missing.

``load_dates`` and ``load_translation`` (any TFDS dataset with two text
features, such as ``ted_hrlr_translate/pt_to_en``) give character ids for an
encoder-decoder trained with teacher forcing: ``TranslationArrays`` and a
``TranslationTask`` holding the ``CharVocabulary`` of each side.
"""

from keras_feedback.datasets._adding_problem import AddingProblem
from keras_feedback.datasets._char_text import CharText
from keras_feedback.datasets._copy_memory import CopyMemory
from keras_feedback.datasets._dates import DateTranslation
from keras_feedback.datasets._dates import decode_target
from keras_feedback.datasets._dates import encode_source
from keras_feedback.datasets._dates import encode_target
from keras_feedback.datasets._dates import load_dates
from keras_feedback.datasets._loading import DatasetNotPreparedError
from keras_feedback.datasets._loading import SequenceTask
from keras_feedback.datasets._loading import load
from keras_feedback.datasets._loading import load_raw
from keras_feedback.datasets._translation import CharVocabulary
from keras_feedback.datasets._translation import TranslationArrays
from keras_feedback.datasets._translation import TranslationTask
from keras_feedback.datasets._translation import load_translation

__all__ = [
    "AddingProblem",
    "CharText",
    "CharVocabulary",
    "CopyMemory",
    "DatasetNotPreparedError",
    "DateTranslation",
    "SequenceTask",
    "TranslationArrays",
    "TranslationTask",
    "decode_target",
    "encode_source",
    "encode_target",
    "load",
    "load_dates",
    "load_raw",
    "load_translation",
]
