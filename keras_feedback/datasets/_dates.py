"""Date-format translation as a TFDS dataset, generated locally.

Dates drawn uniformly from 1950-01-01 to 2049-12-31 are written in one of
16 human-readable formats ("3 March 2021", "03/03/21", "Wed 3 Mar 2021",
"3rd of March 2021", ...), names in their written case, lower case or upper
case; the target is the ISO 8601 date, "2021-03-03". Every text reads as
one date only: day-first and month-first numeric formats differ in the
length of the year, and two-digit years stand for 1950 to 2049.
"""

import dataclasses
import datetime
import os
import string
from typing import List
from typing import Sequence
from typing import Tuple
from typing import Union

import numpy as np
import tensorflow_datasets as tfds

from keras_feedback._api import public
from keras_feedback.datasets import _common
from keras_feedback.datasets import _loading
from keras_feedback.datasets import _translation

FIRST_DATE = datetime.date(1950, 1, 1)
LAST_DATE = datetime.date(2049, 12, 31)
NUM_DAYS = (LAST_DATE - FIRST_DATE).days + 1

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS = (
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
)

# Fields: d/dd day, m/mm month, yy/yyyy year, month/mon and weekday/wkd names
# in full and in three letters, th the day's ordinal suffix.
FORMATS = (
    "{d} {month} {yyyy}",
    "{month} {d}, {yyyy}",
    "{dd}/{mm}/{yy}",
    "{d}.{m}.{yyyy}",
    "{weekday}, {month} {d}, {yyyy}",
    "{mon} {d} {yyyy}",
    "{yyyy}, {d} {month}",
    "{dd}-{mon}-{yyyy}",
    "{d}{th} of {month} {yyyy}",
    "{month} {d}{th}, {yyyy}",
    "{wkd} {d} {mon} {yyyy}",
    "{m}/{d}/{yyyy}",
    "{yyyy}/{mm}/{dd}",
    "{dd} {mon} {yy}",
    "{weekday} {d} {month} {yyyy}",
    "{yyyy}{mm}{dd}",
)
# How the letters of a text are written: as in FORMATS (capitalized names),
# all lower case, all upper case.
CASES = (str, str.lower, str.upper)

SOURCE_ALPHABET = (
    " ,-./" + string.digits + string.ascii_uppercase + string.ascii_lowercase
)
TARGET_ALPHABET = string.digits + "-"
SOURCE_VOCABULARY = _translation.CharVocabulary(SOURCE_ALPHABET)
TARGET_VOCABULARY = _translation.CharVocabulary(TARGET_ALPHABET)
PAD = _translation.CharVocabulary.PAD
START = _translation.CharVocabulary.START
END = _translation.CharVocabulary.END
# The longest text: "Wednesday, September 30, 2021".
MAX_SOURCE_LENGTH = 29
# "2021-03-03"; the decoder arrays have one step more, for START or END.
TARGET_LENGTH = 10


def _ordinal(day):
    if day in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def render(date, format_index, case_index=0):
    """The text of ``date`` in ``FORMATS[format_index]``, ``CASES[case_index]``."""
    fields = {
        "d": str(date.day),
        "dd": f"{date.day:02d}",
        "m": str(date.month),
        "mm": f"{date.month:02d}",
        "yy": f"{date.year % 100:02d}",
        "yyyy": str(date.year),
        "month": MONTHS[date.month - 1],
        "mon": MONTHS[date.month - 1][:3],
        "weekday": WEEKDAYS[date.weekday()],
        "wkd": WEEKDAYS[date.weekday()][:3],
        "th": _ordinal(date.day),
    }
    return CASES[case_index](FORMATS[format_index].format(**fields))


def generate(num_examples, rng):
    """``num_examples`` dates as texts and ISO 8601 targets.

    Args:
        num_examples: non-negative int.
        rng: a ``numpy.random.Generator``.

    Returns:
        ``(sources, targets, formats)``: two lists of str and the ``(N,)``
        int32 indices into ``FORMATS``.
    """
    days = rng.integers(0, NUM_DAYS, num_examples)
    formats = rng.integers(0, len(FORMATS), num_examples).astype(np.int32)
    cases = rng.integers(0, len(CASES), num_examples)
    dates = [FIRST_DATE + datetime.timedelta(days=int(d)) for d in days]
    sources = [render(d, f, c) for d, f, c in zip(dates, formats, cases)]
    return sources, [d.isoformat() for d in dates], formats


@public("keras_feedback.datasets.encode_source", serializable=False)
def encode_source(strings: Sequence[Union[str, bytes]]) -> np.ndarray:
    """``(N, 29)`` int32 character ids of date texts, padded with ``PAD`` (0).

    The ids are ``SOURCE_VOCABULARY``'s: 4 special tokens, then the 67
    characters of ``SOURCE_ALPHABET`` (space ``,-./``, digits, ASCII
    letters): 71 ids.

    Raises:
        ValueError: a character outside ``SOURCE_ALPHABET``, or a text
            longer than 29 characters.

    Example:

    >>> keras_feedback.datasets.encode_source(["3.3.2021"])[:, :9]
    array([[12,  7, 12,  7, 11,  9, 11, 10,  0]], dtype=int32)
    """
    return SOURCE_VOCABULARY.encode(strings, MAX_SOURCE_LENGTH)


@public("keras_feedback.datasets.encode_target", serializable=False)
def encode_target(
    strings: Sequence[Union[str, bytes]],
) -> Tuple[np.ndarray, np.ndarray]:
    """The decoder's ``(inputs, targets)`` of ISO 8601 dates, for teacher forcing.

    Both are ``(N, 11)`` int32 ids of ``TARGET_VOCABULARY`` (4 special
    tokens, the digits and ``-``: 15 ids): ``inputs`` is ``START`` (1) and
    the date, ``targets`` the date and ``END`` (2).

    Raises:
        ValueError: a character outside ``TARGET_ALPHABET``, or a text
            longer than 10 characters.

    Example:

    >>> inputs, targets = keras_feedback.datasets.encode_target(["2021-03-03"])
    >>> inputs
    array([[ 1,  6,  4,  6,  5, 14,  4,  7, 14,  4,  7]], dtype=int32)
    >>> targets
    array([[ 6,  4,  6,  5, 14,  4,  7, 14,  4,  7,  2]], dtype=int32)
    """
    length = TARGET_LENGTH + 1
    return (
        TARGET_VOCABULARY.encode(strings, length, start=True),
        TARGET_VOCABULARY.encode(strings, length, end=True),
    )


@public("keras_feedback.datasets.decode_target", serializable=False)
def decode_target(ids: Sequence[Sequence[int]]) -> List[str]:
    """The texts of ``(N, T)`` target ids, each read up to its first ``END``.

    ``PAD`` and ``START`` are skipped, so decoder inputs, decoder targets
    and predicted tokens all decode.

    Example:

    >>> keras_feedback.datasets.decode_target([[6, 4, 6, 5, 2, 9, 9]])
    ['2021']
    """
    return TARGET_VOCABULARY.decode(ids)


@dataclasses.dataclass
class DateTranslationConfig(tfds.core.BuilderConfig):
    """A config of ``date_translation``: the split sizes."""

    num_train: int = 20_000
    num_validation: int = 1_000
    num_test: int = 2_000


@public("keras_feedback.datasets.DateTranslation", serializable=False)
class DateTranslation(_common.LocalBuilder):
    """Dates in human-readable formats to ISO 8601, generated locally.

    Registered as ``date_translation`` when ``keras_feedback`` is imported:
    ``tfds.load("date_translation")``. Splits ``train`` (20,000),
    ``validation`` (1,000) and ``test`` (2,000) of dates drawn uniformly
    from 1950-01-01 to 2049-12-31 with a fixed seed; nothing is downloaded.

    Features: ``"source"``, the date in one of 16 formats ("3 March 2021",
    "March 3, 2021", "03/03/21", "3.3.2021", "Wednesday, March 3, 2021",
    "Mar 3 2021", "2021, 3 March", "03-Mar-2021", "3rd of March 2021",
    "March 3rd, 2021", "Wed 3 Mar 2021", "3/3/2021" (month first),
    "2021/03/03", "03 Mar 21", "Wednesday 3 March 2021", "20210303"), its
    letters as written, in lower case or in upper case; ``"target"``, the
    ISO 8601 date ("2021-03-03"), both text; ``"format"``, the index of the
    format (a class label). ``as_supervised=True`` yields
    ``(source, target)``. ``keras_feedback.datasets.load_dates`` gives the
    character ids for an encoder-decoder.

    Example:

    >>> import keras_feedback, tensorflow_datasets as tfds
    >>> ds = tfds.load("date_translation", split="train",
    ...                as_supervised=True)  # doctest: +SKIP
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        DateTranslationConfig(
            name="default", description="20,000 / 1,000 / 2,000 examples."
        )
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self):
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "source": tfds.features.Text(),
                    "target": tfds.features.Text(),
                    "format": tfds.features.ClassLabel(num_classes=len(FORMATS)),
                }
            ),
            supervised_keys=("source", "target"),
        )

    def _config_keys(self):
        return (3,)

    def _generate_arrays(self, count, rng):
        sources, targets, formats = generate(count, rng)
        return {"source": sources, "target": targets, "format": formats}


@public("keras_feedback.datasets.load_dates", serializable=False)
def load_dates(
    split: str = "train",
    *,
    data_dir: Union[str, os.PathLike, None] = None,
) -> Tuple[_translation.TranslationArrays, _translation.TranslationTask]:
    """The date-translation task as character ids, generated on first use.

    Args:
        split: TFDS split, e.g. ``"test"`` or ``"train[:2000]"``.
        data_dir: the TFDS data folder the examples are generated into;
            None: TFDS's default (``~/tensorflow_datasets``).

    Returns:
        ``(arrays, task)``: ``TranslationArrays`` of ``(N, 29)`` source ids
        (``encode_source``) and ``(N, 11)`` decoder inputs and targets
        (``encode_target``), and the ``TranslationTask`` with the fixed
        vocabularies (71 source ids, 15 target ids), as
        ``load_translation`` gives for a TFDS translation dataset.

    Example:

    >>> (source, inputs, targets), task = keras_feedback.datasets.load_dates(
    ...     "train", data_dir="data")  # doctest: +SKIP
    >>> model.fit((source, inputs), targets)  # doctest: +SKIP
    """
    dataset, builder = _loading.load_raw("date_translation", split, data_dir=data_dir)
    task = _translation.TranslationTask(
        name=builder.info.full_name,
        source_key="source",
        target_key="target",
        source_vocabulary=SOURCE_VOCABULARY,
        target_vocabulary=TARGET_VOCABULARY,
        source_length=MAX_SOURCE_LENGTH,
        target_length=TARGET_LENGTH + 1,
    )
    sources, targets = _translation.read_pairs(dataset, "source", "target")
    arrays, _ = _translation.encode_pairs(sources, targets, task)
    return arrays, task
