"""Writes the Examples pages of the documentation site, one per examples/*.py.

    python docs/examples/_generate.py                 # the pages, from the docstrings
    python docs/examples/_generate.py --run           # and every example's output
    python docs/examples/_generate.py --run quickstart translate_dates

Each page is made of the example's docstring (what it shows, its commands)
and an "Output" section. Without ``--run`` the existing Output sections are
kept as they are; with it, the named examples (all by default) are run one
after the other with their default arguments (``ARGUMENTS`` adds any), each
in a fresh temporary folder with ``TF_CPP_MIN_LOG_LEVEL=3``, and what each
prints, its exit status, its wall time and the pictures (``*.png``) it writes
are checked in under ``docs/examples/`` (the docs are built without
TensorFlow). Running every example takes about 20 minutes on 2 CPU cores.
Needs the project installed (the ``.venv`` of README.md) for ``--run`` only.
"""

import argparse
import ast
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PAGES = ROOT / "docs" / "examples"
# The page titles, in the order of mkdocs.yml's nav.
TITLES = {
    "quickstart": "Quickstart",
    "adding_problem": "The adding problem",
    "copy_memory": "Copy memory",
    "char_language_model": "Character language model",
    "mnist_rows": "MNIST row by row",
    "sentiment_imdb": "IMDB sentiment",
    "translate_dates": "Translating dates",
    "iterative_feedback_images": "Iterative feedback on images",
    "equilibrium_images": "Equilibrium on images",
    "distributed_training": "Distributed training",
    "streaming_litert": "Streaming with LiteRT",
}
ARGUMENTS: dict = {}  # extra command-line arguments per example, if any
START = "<!-- output:start -->"
END = "<!-- output:end -->"
NOT_RUN = (
    "Not recorded yet: run `python docs/examples/_generate.py --run {name}`"
    " to record what this example prints."
)


def docstring_markdown(text):
    """The docstring as markdown: indented command lines become a code block."""
    lines = ast.get_docstring(ast.parse(text)).splitlines()
    out, commands = [], []
    for line in lines[2:]:
        if line.startswith("    ") and (commands or line.strip().startswith("python")):
            commands.append(line[4:])
            continue
        if commands:
            out += ["```bash", *commands, "```"]
            commands = []
        out.append(re.sub(r"``([^`]+)``", r"`\1`", line))
    if commands:
        out += ["```bash", *commands, "```"]
    summary = re.sub(r"``([^`]+)``", r"`\1`", lines[0])
    return summary, "\n".join(out).strip()


def output_section(page):
    if page.exists():
        text = page.read_text()
        if START in text and END in text:
            return text.split(START, 1)[1].split(END, 1)[0].strip()
    return NOT_RUN.format(name=page.stem)


def write_page(name, output):
    summary, body = docstring_markdown((EXAMPLES / f"{name}.py").read_text())
    page = "\n".join(
        [
            f"# {TITLES[name]}",
            "",
            f"**{summary}**",
            "",
            body,
            "",
            f"The script: `examples/{name}.py`; `python examples/{name}.py --help`"
            " lists its options.",
            "",
            "## Output",
            "",
            START,
            output.strip(),
            END,
            "",
        ]
    )
    (PAGES / f"{name}.md").write_text(page)


def write_index():
    rows = []
    for name in TITLES:
        summary, _ = docstring_markdown((EXAMPLES / f"{name}.py").read_text())
        _, colon, rest = summary.partition(": ")
        shows = rest[:1].upper() + rest[1:] if colon else summary
        rows.append(f"| [{TITLES[name]}]({name}.md) | {shows} |")
    (PAGES / "index.md").write_text(
        "\n".join(
            [
                "# Examples",
                "",
                "Complete scripts in the repository's `examples/` folder, each"
                " runnable as `python examples/<name>.py` (`--help` lists its"
                " options). Each page says what the example shows, gives its"
                " commands and what it printed when it was last run with its"
                " default arguments; `docs/examples/_generate.py` writes these"
                " pages and records the outputs.",
                "",
                "| example | what it shows |",
                "| --- | --- |",
                *rows,
                "",
            ]
        )
    )


def run(name):
    command = [sys.executable, str(EXAMPLES / f"{name}.py"), *ARGUMENTS.get(name, [])]
    shown = " ".join(["python", f"examples/{name}.py", *ARGUMENTS.get(name, [])])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = subprocess.run(
            command,
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        seconds = time.perf_counter() - start
        images = PAGES / "images" / name
        shutil.rmtree(images, ignore_errors=True)
        pictures = []
        for path in sorted(Path(folder).rglob("*.png")):
            if "tensorflow_datasets" in path.parts:
                continue
            images.mkdir(parents=True, exist_ok=True)
            target = images / path.name
            shutil.copyfile(path, target)
            pictures.append(target.relative_to(PAGES).as_posix())
    printed = "\n".join(
        line.rstrip()
        for line in result.stdout.replace("\r", "\n").splitlines()
        if "\x1b" not in line  # Keras's progress bars
    ).strip()
    when = datetime.date.today().isoformat()
    machine = f"{platform.machine()}, {os.cpu_count()} logical CPUs"
    out = [
        f"`{shown}`, run on {when} ({machine}): {seconds:.0f} s,"
        f" exit status {result.returncode}.",
        "",
        "```text",
        printed,
        "```",
    ]
    for picture in pictures:
        out += ["", f"![{Path(picture).stem}]({picture})"]
    print(
        f"{name}: exit {result.returncode}, {seconds:.0f} s, {len(pictures)} pictures"
    )
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the examples too")
    parser.add_argument("names", nargs="*", help="examples to run (default: all)")
    args = parser.parse_args(argv)
    found = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_"))
    if sorted(TITLES) != found:
        raise SystemExit(f"TITLES (and mkdocs.yml's nav) must list {found}")
    unknown = set(args.names) - set(found)
    if unknown:
        raise SystemExit(f"no such examples: {sorted(unknown)}")
    chosen = (args.names or list(TITLES)) if args.run else []
    for name in TITLES:
        output = run(name) if name in chosen else output_section(PAGES / f"{name}.md")
        write_page(name, output)
    write_index()
    return 0


if __name__ == "__main__":
    sys.exit(main())
