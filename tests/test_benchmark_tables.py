"""benchmarks/README.md's current tables are regenerated from benchmarks/results/."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
    path = os.path.join(ROOT, "benchmarks", "current_tables.py")
    spec = importlib.util.spec_from_file_location("current_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_current_tables_are_up_to_date():
    assert _script().main(["--check"]) == 0


def test_record_replaces_a_machines_run(tmp_path, monkeypatch):
    tables = _script()
    results = tmp_path / "results"
    (results / "toy").mkdir(parents=True)
    (results / "toy" / "_about.md").write_text("---\ntitle: Toy\n---\n\nA toy.\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# B\n\n{tables.BEGIN}\nold\n{tables.END}\nafter\n")
    monkeypatch.setattr(tables, "RESULTS", results)
    monkeypatch.setattr(tables, "README", readme)
    monkeypatch.setattr(tables, "HERE", tmp_path)
    for seconds in ("1.0", "2.0"):
        run = tmp_path / "run.txt"
        run.write_text(
            "Machine: Toy CPU, 2 logical CPUs\nprogress...\n\n"
            f"Seconds per step\n| model | s |\n|---|---|\n| a | {seconds} |\n"
        )
        cmd = ["record", "toy", str(run), "--command", "toy", "--date", "2026-12-05"]
        assert tables.main(cmd) == 0
    text = readme.read_text()
    assert text.startswith("# B\n") and text.endswith(f"{tables.END}\nafter\n")
    assert "### Toy CPU (2026-12-05)" in text
    assert "**Seconds per step**" in text and "| a | 2.0 |" in text
    assert "| a | 1.0 |" not in text and "progress" not in text
    assert [p.name for p in (results / "toy").iterdir() if p.name != "_about.md"] == [
        "toy-cpu.md"
    ]
    assert tables.main(["--check"]) == 0
