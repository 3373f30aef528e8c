"""The package surface: public API, backend check, command line."""

import importlib
import os
import subprocess
import sys

import pytest

import keras_feedback
from keras_feedback import _api
from keras_feedback import cli


def test_every_public_symbol_is_reachable_at_its_path():
    assert _api.PUBLIC_SYMBOLS, "no public symbols registered"
    for path, symbol in _api.PUBLIC_SYMBOLS.items():
        namespace, name = path.rsplit(".", 1)
        module = importlib.import_module(namespace)
        assert getattr(module, name) is symbol, path
        assert name in module.__all__, path


def test_namespaces_export_only_public_symbols():
    for namespace in {p.rsplit(".", 1)[0] for p in _api.PUBLIC_SYMBOLS}:
        module = importlib.import_module(namespace)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type(keras_feedback)):
                continue  # a sub-namespace
            assert f"{namespace}.{name}" in _api.PUBLIC_SYMBOLS, (namespace, name)


def test_layers_are_registered_for_serialization():
    import keras

    for name in ("Feedback", "FeedbackCell"):
        cls = getattr(keras_feedback.layers, name)
        assert keras.saving.get_registered_name(cls) == f"keras_feedback>{name}"


def test_other_keras_backend_fails_clearly():
    env = dict(os.environ, KERAS_BACKEND="numpy")
    result = subprocess.run(
        [sys.executable, "-c", "import keras_feedback"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "needs the TensorFlow backend" in result.stderr
    assert "'numpy' backend" in result.stderr


def test_cli_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert (
        capsys.readouterr().out.strip()
        == f"keras-feedback {keras_feedback.__version__}"
    )
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "usage: keras-feedback" in out
    for name in cli.SUBCOMMANDS:
        assert name in out


def test_cli_unknown_command_fails(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err


def test_ci_runs_the_readme_test_command():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(root, ".ci", "run")) as f:
        ci = [line for line in f if line.startswith("python3 -m venv")]
    assert len(ci) == 1
    assert ci[0].strip() in readme


def test_the_api_reference_lists_every_public_symbol():
    # docs/api/<namespace>.md holds one `::: path` per entry of __all__.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = os.path.join(root, "docs", "api")
    entries = set()
    for name in os.listdir(folder):
        with open(os.path.join(folder, name)) as f:
            entries |= {line[4:].strip() for line in f if line.startswith("::: ")}
    documented = set()
    for path in _api.PUBLIC_SYMBOLS:
        namespace, name = path.rsplit(".", 1)
        top = namespace if namespace.count(".") == 1 else namespace.rsplit(".", 1)[0]
        documented.add(path if namespace.count(".") == 1 else namespace)
        assert top.split(".")[1] + ".md" in os.listdir(folder), path
    assert documented <= entries, sorted(documented - entries)


def test_the_readme_python_examples_run(tmp_path, monkeypatch):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as f:
        readme = f.read()
    blocks = [block.split("```")[0] for block in readme.split("```python\n")[1:]]
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)  # the quickstart writes TensorBoard logs here
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert os.listdir(tmp_path / "logs" / "train")


def test_readme_links_stay_inside_the_repository():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as f:
        readme = f.read()
    assert "../" not in readme
    for name in ("LICENSE", "CHANGELOG.md", "mkdocs.yml", "docs/index.md"):
        assert os.path.isfile(os.path.join(root, name)), name
