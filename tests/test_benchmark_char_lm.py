"""benchmarks/char_lm.py: its smoke run prints recordable tables (each
metric beside its trivial baseline), every row builds, and the corpus is
refused when it is not the pinned one."""

import importlib.util
import os
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def char_lm():
    return _load("char_lm")


@pytest.mark.slow
def test_smoke_run_prints_each_metric_beside_its_baseline(char_lm, capsys, monkeypatch):
    # The library's own engine choice, as the script runs it: conftest's
    # patch (the fused engine for every layer) costs the smoke run's tiny
    # layers a compilation per model, doubling the test's time.
    monkeypatch.undo()
    # One row (each row's model is built in test_every_row_builds): CI time.
    char_lm.main(["--smoke", "--tasks", "--rows", "feedback-on"])
    out = capsys.readouterr().out
    assert out.startswith("Machine: ")
    found = _load("current_tables").tables(out)
    titles = [title for title, _, _ in found]
    assert len(found) == 4, titles
    for title, start in zip(
        titles,
        (
            "Character-level LM, learning rate chosen",
            "Character-level LM, test BPC",
            "Copy memory, delay 10",
            "The adding problem, T=20",
        ),
    ):
        assert title.startswith(start)
    rows = ["feedback-on"]
    for _, lines, _ in found:
        header = lines[0]
        body = lines[2:]
        assert [line.split("|")[1].strip() for line in body] == [
            char_lm.ROWS[row] for row in rows
        ]
        if "beats the baseline" in header:
            assert "baseline" in header.replace("beats the baseline", "")
            assert all(
                line.rstrip(" |").rsplit("|", 1)[1].strip() in ("yes", "no", "barely")
                for line in body
            )
    assert "Unigram baseline:" in out and "Memoryless baseline:" in out


def test_every_row_builds(char_lm):
    cfg = types.SimpleNamespace(
        length=8,
        vocab=12,
        embed=4,
        feedback_ratio=0.5,
        copy_delay=3,
        task_embed=4,
        adding_length=8,
    )
    rows = [
        r for r in char_lm.ROWS if char_lm.has_stack() or r not in char_lm.STACK_ROWS
    ]
    for row in rows:
        for build in (char_lm.lm_model, char_lm.copy_model, char_lm.adding_model):
            assert build(row, 6, cfg).count_params() > 0


def test_match_units_finds_the_nearest_count(char_lm):
    count = lambda units: 4 * units * (units + 10)  # noqa: E731
    units, params = char_lm.match_units(count, 4 * 100 * 110 + 7, 0.02)
    assert (units, params) == (100, 44_000)
    with pytest.raises(ValueError, match="within 1%"):
        char_lm.match_units(lambda units: 1000 * units, 1500, 0.01)


def test_the_corpus_is_refused_when_it_is_not_the_pinned_one(char_lm):
    with pytest.raises(char_lm.CorpusMismatch) as info:
        char_lm.read_corpus(expected="0" * 64)
    assert "expected sha256 " + "0" * 64 in str(info.value)
    assert "found " in str(info.value)
    with pytest.raises(char_lm.CorpusMismatch, match="no_such_module.py"):
        char_lm.read_corpus(files=(("no_such_module.py", "0" * 16),))
    try:
        data = char_lm.read_corpus()
    except char_lm.CorpusMismatch:
        pytest.skip(f"not {char_lm.CORPUS_SOURCE}'s standard library")
    corpus = char_lm.Corpus(data)
    assert len(data) == 1_002_221
    assert corpus.vocab == 97
    assert sum(len(s) for s in corpus.splits.values()) == len(data)
