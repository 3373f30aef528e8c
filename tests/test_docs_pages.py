"""The code on the documentation site's home, Getting started, Cores,
FeedbackStack and quantization-aware training pages runs."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks(page):
    with open(os.path.join(ROOT, "docs", page)) as f:
        return re.findall(r"^```python\n(.*?)^```", f.read(), re.M | re.S)


@pytest.mark.parametrize(
    "page",
    [
        "index.md",
        "getting-started.md",
        "cores.md",
        "feedback_stack.md",
        "quantization.md",
    ],
)
def test_the_pages_python_blocks_run_in_order(
    page, tmp_path, monkeypatch, auto_engine_as_shipped
):
    # The pages run as a reader's session runs them (engine="auto" as shipped).
    blocks = _python_blocks(page)
    assert blocks, page
    monkeypatch.chdir(tmp_path)  # the pages write their files here
    namespace = {}
    for block in blocks:
        exec(compile(block, os.path.join("docs", page), "exec"), namespace)
    if page == "getting-started.md":
        assert namespace["mse"] < 0.5 * namespace["y_test"].var()
        assert os.path.isfile("trace.png") and os.path.isdir("serving/feedback/1")
    if page == "quantization.md":
        report = namespace["report"]
        assert report["within_tolerance"]
        assert report["float_error"]["max_rel_error"] > report["max_rel_error"]
