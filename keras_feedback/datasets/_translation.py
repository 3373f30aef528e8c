"""Text-to-text datasets as padded character ids for an encoder-decoder.

A TFDS translation dataset (two text features, such as
``ted_hrlr_translate/pt_to_en``) prepared in a data folder becomes three
arrays ready for ``model.fit((source_ids, decoder_inputs), decoder_targets)``
(teacher forcing), with character vocabularies built from its training split.
"""

import dataclasses
import os
from typing import ClassVar
from typing import Iterable
from typing import List
from typing import NamedTuple
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import numpy as np
import tensorflow_datasets as tfds

from keras_feedback._api import public
from keras_feedback.datasets import _loading

_READ_BATCH = 4096
# What `decode` writes for the UNKNOWN id.
_REPLACEMENT = "\ufffd"


@public("keras_feedback.datasets.CharVocabulary", serializable=False)
@dataclasses.dataclass(frozen=True)
class CharVocabulary:
    """Characters as token ids, with padding, start, end and unknown tokens.

    Ids 0 to 3 are ``PAD``, ``START``, ``END`` and ``UNKNOWN``; the
    characters of ``alphabet`` follow, in its order, from id 4.

    Args:
        alphabet: str, the characters, each once.
        map_unknown: bool, encode characters outside ``alphabet`` as
            ``UNKNOWN`` instead of refusing them (vocabularies built from a
            training split, which a test split may exceed).

    Example:

    >>> vocabulary = keras_feedback.datasets.CharVocabulary("ab")
    >>> vocabulary.size
    6
    >>> vocabulary.encode(["ab", "b"], 4, end=True)
    array([[4, 5, 2, 0],
           [5, 2, 0, 0]], dtype=int32)
    >>> vocabulary.decode([[4, 5, 2, 0], [5, 2, 0, 0]])
    ['ab', 'b']
    """

    PAD: ClassVar[int] = 0
    START: ClassVar[int] = 1
    END: ClassVar[int] = 2
    UNKNOWN: ClassVar[int] = 3
    NUM_SPECIAL: ClassVar[int] = 4

    alphabet: str
    map_unknown: bool = False

    def __post_init__(self):
        if not isinstance(self.alphabet, str) or not self.alphabet:
            raise ValueError(
                f"Argument `alphabet` must be a non-empty string, got {self.alphabet!r}"
            )
        repeated = sorted({c for c in self.alphabet if self.alphabet.count(c) > 1})
        if repeated:
            raise ValueError(
                f"Argument `alphabet` must hold each character once, got "
                f"{repeated} more than once"
            )
        ids = {c: i + self.NUM_SPECIAL for i, c in enumerate(self.alphabet)}
        object.__setattr__(self, "_ids", ids)

    @classmethod
    def from_texts(
        cls, texts: Iterable[Union[str, bytes]], map_unknown: bool = True
    ) -> "CharVocabulary":
        """The vocabulary of every character in ``texts``, in code point order."""
        characters = set()
        for text in texts:
            characters.update(_as_text(text, "texts"))
        if not characters:
            raise ValueError("Argument `texts` holds no characters")
        return cls("".join(sorted(characters)), map_unknown=map_unknown)

    @property
    def size(self) -> int:
        """The number of ids: the special tokens and the characters."""
        return len(self.alphabet) + self.NUM_SPECIAL

    def encode(
        self,
        strings: Sequence[Union[str, bytes]],
        length: int,
        *,
        start: bool = False,
        end: bool = False,
        argument: str = "strings",
    ) -> np.ndarray:
        """``(N, length)`` int32 ids of ``strings``, padded with ``PAD``.

        Args:
            strings: a sequence of str (or UTF-8 bytes, as TFDS yields text).
            length: positive int, the columns of the result.
            start: bool, put ``START`` before each string.
            end: bool, put ``END`` after each string.
            argument: the name errors give ``strings``.

        Raises:
            ValueError: a character is not in the alphabet (unless
                ``map_unknown``), or a string does not fit in ``length``.
        """
        strings = _as_texts(strings, argument)
        _loading.check_positive("length", length)
        ids = np.full((len(strings), length), self.PAD, np.int32)
        for row, text in enumerate(strings):
            tokens = [self._id(c, text, row, argument) for c in text]
            tokens = [self.START] * start + tokens + [self.END] * end
            if len(tokens) > length:
                raise ValueError(
                    f"Argument `{argument}`: item {row}, {text!r}, needs "
                    f"{len(tokens)} ids, more than the length {length}"
                )
            ids[row, : len(tokens)] = tokens
        return ids

    def decode(
        self, ids: Sequence[Sequence[int]], *, argument: str = "ids"
    ) -> List[str]:
        """The strings of rows of ids, each read up to its first ``END``.

        ``PAD`` and ``START`` are skipped, ``UNKNOWN`` reads as U+FFFD.

        Args:
            ids: ``(N, T)`` integers, e.g. a decoder's predicted tokens.
            argument: the name errors give ``ids``.
        """
        ids = np.asarray(ids)
        if ids.ndim != 2 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(
                f"Argument `{argument}` must be a (batch, time) array of integer "
                f"ids, got shape {ids.shape} and dtype {ids.dtype}"
            )
        bad = ids[(ids < 0) | (ids >= self.size)]
        if bad.size:
            raise ValueError(
                f"Argument `{argument}`: id {int(bad[0])} is outside the "
                f"vocabulary [0, {self.size})"
            )
        characters = (_REPLACEMENT,) + tuple(self.alphabet)
        strings = []
        for row in ids.tolist():
            out = []
            for token in row:
                if token == self.END:
                    break
                if token >= self.UNKNOWN:
                    out.append(characters[token - self.UNKNOWN])
            strings.append("".join(out))
        return strings

    def _id(self, character, text, row, argument):
        token = self._ids.get(character)
        if token is not None:
            return token
        if self.map_unknown:
            return self.UNKNOWN
        raise ValueError(
            f"Argument `{argument}`: character {character!r} of item {row}, "
            f"{text!r}, is not in the alphabet {self.alphabet!r}"
        )


def _as_text(value, argument):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise TypeError(f"Argument `{argument}` must hold strings, got {value!r}")


def _as_texts(strings, argument):
    if isinstance(strings, (str, bytes)):
        raise TypeError(
            f"Argument `{argument}` must be a sequence of strings, got the "
            f"single string {strings!r} (wrap it in a list)"
        )
    return [_as_text(s, argument) for s in strings]


@public("keras_feedback.datasets.TranslationArrays", serializable=False)
class TranslationArrays(NamedTuple):
    """The arrays of a text-to-text split, for teacher forcing.

    ``model.fit((source_ids, decoder_inputs), decoder_targets)``; the
    decoder's loss should skip ``PAD`` (0), e.g. with
    ``keras.losses.SparseCategoricalCrossentropy(ignore_class=0)``.

    Attributes:
        source_ids: ``(N, source_length)`` int32 ids of the source text,
            padded at the end with ``PAD``.
        decoder_inputs: ``(N, target_length)`` int32: ``START`` then the
            target's ids, padded.
        decoder_targets: ``(N, target_length)`` int32: the target's ids then
            ``END``, padded (``decoder_inputs`` shifted by one step).
    """

    source_ids: np.ndarray
    decoder_inputs: np.ndarray
    decoder_targets: np.ndarray


@public("keras_feedback.datasets.TranslationTask", serializable=False)
@dataclasses.dataclass(frozen=True)
class TranslationTask:
    """What a text-to-text loader read, and how to turn ids back into text.

    Attributes:
        name: the dataset's full name (``"ted_hrlr_translate/pt_to_en/1.0.0"``).
        source_key: the feature read as the source text.
        target_key: the feature read as the target text.
        source_vocabulary: the ``CharVocabulary`` of ``source_ids``.
        target_vocabulary: the ``CharVocabulary`` of the decoder's ids
            (``target_vocabulary.decode(predicted_ids)`` gives the text).
        source_length: the columns of ``source_ids``.
        target_length: the columns of the decoder arrays (the longest
            target plus one, for ``START`` or ``END``).
        num_dropped: examples of the split left out because their source or
            target was longer than these lengths.
    """

    name: str
    source_key: str
    target_key: str
    source_vocabulary: CharVocabulary
    target_vocabulary: CharVocabulary
    source_length: int
    target_length: int
    num_dropped: int = 0


def _text_keys(info, source_key, target_key):
    """The two text features to read: given, else the supervised keys.

    When one key is given and the dataset has two text features, the other
    key is the other feature.
    """
    features = info.features
    texts = sorted(
        k for k in features.keys() if isinstance(features[k], tfds.features.Text)
    )
    if info.supervised_keys and len(info.supervised_keys) == 2:
        default = tuple(info.supervised_keys)
    else:
        default = tuple(texts) if len(texts) == 2 else (None, None)
    if len(texts) == 2 and (source_key is None) != (target_key is None):
        given = source_key if target_key is None else target_key
        other = [k for k in texts if k != given]
        default = (other[0], other[0]) if len(other) == 1 else default
    source_key = default[0] if source_key is None else source_key
    target_key = default[1] if target_key is None else target_key
    for argument, key in (("source_key", source_key), ("target_key", target_key)):
        if key not in texts:
            raise ValueError(
                f"Argument `{argument}` must name a text feature of "
                f"{info.full_name!r}, got {key!r}; its text features are {texts}"
            )
    if source_key == target_key:
        raise ValueError(
            f"Arguments `source_key` and `target_key` must differ, got "
            f"{source_key!r} for both"
        )
    return source_key, target_key


def read_pairs(dataset, source_key, target_key):
    """The ``(sources, targets)`` strings of a ``tf.data`` split of examples."""
    sources, targets = [], []
    for batch in tfds.as_numpy(dataset.batch(_READ_BATCH)):
        sources.extend(t.decode("utf-8") for t in batch[source_key])
        targets.extend(t.decode("utf-8") for t in batch[target_key])
    return sources, targets


def encode_pairs(sources, targets, task):
    """``TranslationArrays`` of the pairs that fit ``task``'s lengths.

    Returns:
        ``(arrays, num_dropped)``.
    """
    keep = [
        i
        for i, (s, t) in enumerate(zip(sources, targets))
        if len(s) <= task.source_length and len(t) < task.target_length
    ]
    dropped = len(sources) - len(keep)
    sources = [sources[i] for i in keep]
    targets = [targets[i] for i in keep]
    source_ids = task.source_vocabulary.encode(
        sources, task.source_length, argument="sources"
    )
    vocabulary, length = task.target_vocabulary, task.target_length
    arrays = TranslationArrays(
        source_ids,
        vocabulary.encode(targets, length, start=True, argument="targets"),
        vocabulary.encode(targets, length, end=True, argument="targets"),
    )
    return arrays, dropped


@public("keras_feedback.datasets.load_translation", serializable=False)
def load_translation(
    name: str,
    split: str = "train",
    *,
    data_dir: Union[str, os.PathLike, None] = None,
    source_key: Optional[str] = None,
    target_key: Optional[str] = None,
    max_source_length: Optional[int] = None,
    max_target_length: Optional[int] = None,
    download: bool = False,
) -> Tuple[TranslationArrays, TranslationTask]:
    """Loads a TFDS translation dataset as character ids, offline.

    Any dataset with two text features works (``ted_hrlr_translate/pt_to_en``,
    whose features are named by language, ``"pt"`` and ``"en"``). The
    character vocabularies are those of the ``train`` split, so every split
    of one dataset gets the same ids; characters the training split lacks
    become ``UNKNOWN``.

    Args:
        name: TFDS name, optionally with config and version.
        split: TFDS split, e.g. ``"test"`` or ``"train[:10%]"``.
        data_dir: the TFDS data folder the dataset was prepared in; None:
            TFDS's default (``~/tensorflow_datasets``).
        source_key, target_key: the text features to translate from and to;
            default: the dataset's supervised keys.
        max_source_length, max_target_length: positive ints, the longest
            source and target kept (in characters); longer examples are left
            out (``task.num_dropped``). None: the longest of the training
            split.
        download: bool, let TFDS download a dataset that is not prepared.

    Returns:
        ``(arrays, task)``: the split's ``TranslationArrays`` and the
        ``TranslationTask`` holding the vocabularies and lengths.

    Raises:
        keras_feedback.datasets.DatasetNotPreparedError: the dataset is not
            in ``data_dir`` and ``download`` is False. Its message holds the
            ``tfds build`` command that prepares it.

    Example:

    >>> (source, inputs, targets), task = keras_feedback.datasets.load_translation(
    ...     "ted_hrlr_translate/pt_to_en", "validation",
    ...     data_dir="data")  # doctest: +SKIP
    """
    _loading.check_positive("max_source_length", max_source_length, allow_none=True)
    _loading.check_positive("max_target_length", max_target_length, allow_none=True)
    train, builder = _loading.load_raw(
        name, "train", data_dir=data_dir, download=download
    )
    source_key, target_key = _text_keys(builder.info, source_key, target_key)
    train_sources, train_targets = read_pairs(train, source_key, target_key)
    if not train_sources:
        raise ValueError(f"Argument `name`: the train split of {name!r} is empty")
    if split == "train":
        sources, targets = train_sources, train_targets
    else:
        dataset, _ = _loading.load_raw(name, split, data_dir=data_dir)
        sources, targets = read_pairs(dataset, source_key, target_key)
    task = TranslationTask(
        name=builder.info.full_name,
        source_key=source_key,
        target_key=target_key,
        source_vocabulary=CharVocabulary.from_texts(train_sources),
        target_vocabulary=CharVocabulary.from_texts(train_targets),
        source_length=max_source_length or max(map(len, train_sources)),
        target_length=(max_target_length or max(map(len, train_targets))) + 1,
    )
    arrays, dropped = encode_pairs(sources, targets, task)
    return arrays, dataclasses.replace(task, num_dropped=dropped)
