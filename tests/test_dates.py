"""The date-translation task, character vocabularies and translation loaders."""

import datetime
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_feedback import datasets
from keras_feedback.datasets import _common
from keras_feedback.datasets import _dates

# The formats written independently of `_dates`: how `datetime` writes each
# one (glibc's %-d, %-m: no zero padding) and reads it back. "{th}" stands
# for the day's English ordinal suffix.
WRITE = (
    "%-d %B %Y",
    "%B %-d, %Y",
    "%d/%m/%y",
    "%-d.%-m.%Y",
    "%A, %B %-d, %Y",
    "%b %-d %Y",
    "%Y, %-d %B",
    "%d-%b-%Y",
    "%-d{th} of %B %Y",
    "%B %-d{th}, %Y",
    "%a %-d %b %Y",
    "%-m/%-d/%Y",
    "%Y/%m/%d",
    "%d %b %y",
    "%A %-d %B %Y",
    "%Y%m%d",
)
READ = tuple(f.replace("%-", "%") for f in WRITE)
SUFFIX = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    # Shared with tests/test_datasets.py's builders: generated once a session.
    path = tmp_path_factory.getbasetemp() / "keras_feedback_tfds"
    path.mkdir(exist_ok=True)
    return str(path)


def _write(date, index):
    text = date.strftime(WRITE[index])
    return text.replace("{th}", SUFFIX.get(date.day, "th"))


def _read(text, index):
    """The date ``text`` reads as in format ``index``, or None."""
    form = READ[index]
    if "{th}" in form:
        match = re.search(r"(\d+)(st|nd|rd|th)", text, re.IGNORECASE)
        if not match or match.group(2).lower() != SUFFIX.get(int(match[1]), "th"):
            return None
        text = text[: match.end(1)] + text[match.end() :]
        form = form.replace("{th}", "")
    try:
        date = datetime.datetime.strptime(text, form).date()
    except ValueError:
        return None
    if date.year > 2049:  # %y reads 00-68 as 2000-2068; ours are 1950-2049
        date = date.replace(year=date.year - 100)
    return date


def _sample(count=4000, seed=0):
    return _dates.generate(count, np.random.default_rng(seed))


def test_generation_is_fixed_by_the_seed_and_differs_between_splits():
    first = _dates.generate(500, _common.split_rng("train", 3))
    second = _dates.generate(500, _common.split_rng("train", 3))
    test = _dates.generate(500, _common.split_rng("test", 3))
    assert first[:2] == second[:2]
    np.testing.assert_array_equal(first[2], second[2])
    assert first[1] != test[1]


def test_dates_and_formats_are_drawn_uniformly():
    _, targets, formats = _sample(32_000)
    dates = [datetime.date.fromisoformat(t) for t in targets]
    assert min(dates) >= datetime.date(1950, 1, 1)
    assert max(dates) <= datetime.date(2049, 12, 31)
    years = np.bincount([d.year - 1950 for d in dates], minlength=100)
    assert len(years) == 100 and years.min() > 200 and years.max() < 450
    counts = np.bincount(formats, minlength=len(WRITE))
    assert len(counts) == len(WRITE) == len(_dates.FORMATS)
    np.testing.assert_allclose(counts / len(formats), 1 / len(WRITE), atol=0.01)


def test_every_text_is_its_date_in_its_format():
    sources, targets, formats = _sample()
    cases = set()
    for text, target, index in zip(sources, targets, formats):
        date = datetime.date.fromisoformat(target)
        expected = _write(date, index)
        assert text in (expected, expected.lower(), expected.upper()), (text, index)
        cases.add(
            "written" if text == expected else ("lower" if text.islower() else "upper")
        )
        assert _read(text, index) == date, (text, index)
    assert cases == {"written", "lower", "upper"}
    assert set(formats) == set(range(len(WRITE)))


def test_every_text_reads_as_one_date_only():
    sources, targets, _ = _sample()
    for text, target in zip(sources, targets):
        dates = {_read(text, i) for i in range(len(READ))} - {None}
        assert dates == {datetime.date.fromisoformat(target)}, text


def test_the_longest_text_fits_and_every_character_is_in_the_alphabet():
    longest = 0
    characters = set()
    day = datetime.date(1950, 1, 1)
    while day.year < 2050:
        for index in range(len(_dates.FORMATS)):
            text = _dates.render(day, index)
            longest = max(longest, len(text))
            characters.update(text, text.lower(), text.upper())
        day += datetime.timedelta(days=1)
    assert longest == _dates.MAX_SOURCE_LENGTH == 29
    assert characters <= set(_dates.SOURCE_ALPHABET)
    assert _dates.render(datetime.date(2021, 3, 3), 8) == "3rd of March 2021"
    assert _dates.render(datetime.date(2021, 3, 3), 5, 2) == "MAR 3 2021"
    assert _dates.render(datetime.date(2021, 3, 3), 6, 1) == "2021, 3 march"


# --- vocabularies -----------------------------------------------------------


def test_vocabulary_sizes_and_special_ids():
    assert (datasets.CharVocabulary.PAD, datasets.CharVocabulary.START) == (0, 1)
    assert (datasets.CharVocabulary.END, datasets.CharVocabulary.UNKNOWN) == (2, 3)
    assert (_dates.PAD, _dates.START, _dates.END) == (0, 1, 2)
    assert _dates.SOURCE_VOCABULARY.size == 71
    assert _dates.TARGET_VOCABULARY.size == 15
    assert _dates.TARGET_ALPHABET == "0123456789-"


def test_encode_and_decode_round_trip_with_teacher_forcing_shift():
    sources, targets, _ = _sample(500)
    source_ids = datasets.encode_source(sources)
    assert source_ids.shape == (500, 29) and source_ids.dtype == np.int32
    assert _dates.SOURCE_VOCABULARY.decode(source_ids) == sources
    lengths = np.array([len(s) for s in sources])
    np.testing.assert_array_equal((source_ids != 0).sum(axis=1), lengths)
    for row, n in zip(source_ids, lengths):
        assert np.all(row[n:] == datasets.CharVocabulary.PAD)
    inputs, outputs = datasets.encode_target(targets)
    assert inputs.shape == outputs.shape == (500, 11)
    np.testing.assert_array_equal(inputs[:, 0], datasets.CharVocabulary.START)
    np.testing.assert_array_equal(outputs[:, -1], datasets.CharVocabulary.END)
    np.testing.assert_array_equal(inputs[:, 1:], outputs[:, :-1])
    assert datasets.decode_target(outputs) == targets
    assert datasets.decode_target(inputs) == targets


def test_padding_and_end_handling():
    vocabulary = datasets.CharVocabulary("ab")
    np.testing.assert_array_equal(
        vocabulary.encode(["ab", "", "b"], 4, start=True, end=True),
        [[1, 4, 5, 2], [1, 2, 0, 0], [1, 5, 2, 0]],
    )
    np.testing.assert_array_equal(vocabulary.encode([b"ba"], 3), [[5, 4, 0]])
    # Read up to the first END; PAD and START skipped, UNKNOWN shown as U+FFFD.
    assert vocabulary.decode([[4, 2, 5, 5], [0, 1, 5, 0], [3, 4, 0, 0]]) == [
        "a",
        "b",
        "\ufffda",
    ]
    assert datasets.decode_target([[2, 5, 5]]) == [""]
    assert datasets.decode_target(np.zeros((2, 0), np.int32)) == ["", ""]
    mapped = datasets.CharVocabulary("ab", map_unknown=True)
    np.testing.assert_array_equal(mapped.encode(["axb"], 3), [[4, 3, 5]])
    learned = datasets.CharVocabulary.from_texts(["ba", b"c\xc3\xa9"])
    assert learned.alphabet == "abcé" and learned.map_unknown


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: datasets.encode_source(["3 März 2021"]),
            "Argument `strings`: character 'ä' of item 0, '3 März 2021', is "
            "not in the alphabet",
        ),
        (
            lambda: datasets.encode_target(["2021-03-03", "2021/03/03"]),
            "Argument `strings`: character '/' of item 1",
        ),
        (
            lambda: datasets.encode_source(["x" * 30]),
            "item 0, 'x{30}', needs 30 ids, more than the length 29",
        ),
        (
            lambda: datasets.encode_target(["2021-03-031"]),
            "needs 12 ids, more than the length 11",
        ),
        (
            lambda: datasets.decode_target([[4, 15]]),
            r"Argument `ids`: id 15 is outside the vocabulary \[0, 15\)",
        ),
        (
            lambda: datasets.decode_target([4, 5]),
            r"Argument `ids` must be a \(batch, time\) array .* shape \(2,\)",
        ),
        (
            lambda: datasets.CharVocabulary("aba"),
            r"`alphabet` must hold each character once, got \['a'\]",
        ),
        (lambda: datasets.CharVocabulary(""), "`alphabet` must be a non-empty"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_single_string_is_refused():
    with pytest.raises(TypeError, match="`strings` must be a sequence of strings"):
        datasets.encode_source("3 March 2021")


# --- the TFDS builder and the loaders -----------------------------------------


def test_builder_is_registered_and_writes_the_seeded_examples(tmp_path):
    assert "date_translation" in tfds.list_builders()
    config = _dates.DateTranslationConfig(
        name="tiny", num_train=40, num_validation=8, num_test=12
    )
    loaded = []
    for folder in ("a", "b"):
        builder = tfds.builder(
            "date_translation", config=config, data_dir=str(tmp_path / folder)
        )
        builder.download_and_prepare()
        splits = {}
        for split in _common.SPLITS:
            examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
            splits[split] = sorted(
                (e["source"].decode(), e["target"].decode(), int(e["format"]))
                for e in examples
            )
        loaded.append(splits)
    assert loaded[0] == loaded[1]
    for split, count in (("train", 40), ("validation", 8), ("test", 12)):
        sources, targets, formats = _dates.generate(count, _common.split_rng(split, 3))
        assert loaded[0][split] == sorted(zip(sources, targets, map(int, formats)))
    assert builder.info.supervised_keys == ("source", "target")


def test_load_dates_gives_teacher_forcing_arrays(data_dir):
    (source, inputs, targets), task = datasets.load_dates("test", data_dir=data_dir)
    assert source.shape == (2000, 29) and inputs.shape == targets.shape == (2000, 11)
    assert task.source_vocabulary is _dates.SOURCE_VOCABULARY
    assert (task.source_length, task.target_length) == (29, 11)
    raw, _ = datasets.load_raw("date_translation", "test", data_dir=data_dir)
    pairs = [(e["source"].decode(), e["target"].decode()) for e in tfds.as_numpy(raw)]
    assert (
        list(
            zip(task.source_vocabulary.decode(source), datasets.decode_target(targets))
        )
        == pairs
    )
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    # The vocabularies learnt from the training split give the same texts.
    arrays, learned = datasets.load_translation(
        "date_translation", "test[:100]", data_dir=data_dir
    )
    assert learned.source_key == "source" and learned.num_dropped == 0
    assert learned.target_vocabulary.alphabet == "-0123456789"
    assert learned.target_vocabulary.decode(arrays.decoder_targets) == [
        t for _, t in pairs[:100]
    ]
    assert learned.source_vocabulary.decode(arrays.source_ids) == [
        s for s, _ in pairs[:100]
    ]


def _mock(num_examples):
    return tfds.testing.mock_data(
        num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE
    )


def test_load_translation_reads_a_prepared_tfds_translation_dataset():
    name = "ted_hrlr_translate/pt_to_en"
    with _mock(30):
        train = list(tfds.as_numpy(tfds.load(name, split="train")))
        validation = list(tfds.as_numpy(tfds.load(name, split="validation")))
        arrays, task = datasets.load_translation(name, "validation")
        short, short_task = datasets.load_translation(
            name, "validation", max_source_length=14, max_target_length=14
        )
        _, reverse = datasets.load_translation(name, "test[:2]", source_key="en")
        with pytest.raises(ValueError, match="`target_key` must name a text feature"):
            datasets.load_translation(name, source_key="pt", target_key="de")
        with pytest.raises(
            ValueError, match="`source_key`.*got 'de'.*\\['en', 'pt'\\]"
        ):
            datasets.load_translation(name, source_key="de")
        with pytest.raises(ValueError, match="must differ, got 'en' for both"):
            datasets.load_translation(name, source_key="en", target_key="en")
    assert (reverse.source_key, reverse.target_key) == ("en", "pt")
    assert (task.source_key, task.target_key) == ("pt", "en")
    pt = [e["pt"].decode() for e in validation]
    en = [e["en"].decode() for e in validation]
    assert task.source_vocabulary.alphabet == "".join(
        sorted({c for e in train for c in e["pt"].decode()})
    )
    assert task.source_length == max(len(e["pt"]) for e in train)
    assert task.target_length == max(len(e["en"]) for e in train) + 1
    keep = [
        len(p) <= task.source_length and len(e) < task.target_length
        for p, e in zip(pt, en)
    ]
    assert task.num_dropped == keep.count(False)
    kept_pt = [p for p, k in zip(pt, keep) if k]
    assert task.source_vocabulary.decode(arrays.source_ids) == kept_pt
    assert task.target_vocabulary.decode(arrays.decoder_targets) == [
        e for e, k in zip(en, keep) if k
    ]
    np.testing.assert_array_equal(arrays.decoder_inputs[:, 0], 1)
    fits = [len(p) <= 14 and len(e) <= 14 for p, e in zip(pt, en)]
    assert short_task.num_dropped == fits.count(False) and 0 < sum(fits) < len(fits)
    assert short.source_ids.shape == (sum(fits), 14)
    assert short.decoder_targets.shape == (sum(fits), 15)


def test_load_translation_of_a_missing_dataset_says_how_to_prepare_it(tmp_path):
    name = "ted_hrlr_translate/pt_to_en"
    with pytest.raises(datasets.DatasetNotPreparedError) as error:
        datasets.load_translation(name, "test", data_dir=str(tmp_path))
    assert error.value.build_command == f"tfds build {name} --data_dir {tmp_path}"
    assert error.value.build_command in str(error.value)
    with pytest.raises(ValueError, match="`max_source_length`.*got 0"):
        datasets.load_translation(name, max_source_length=0)
