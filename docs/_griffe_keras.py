"""A griffe extension (mkdocs.yml): Keras-style docstring sections, rendered.

The docstrings follow Keras: ``Example:``, a blank line, then doctests at the
same indentation. griffe's Google parser reads that as plain text (the
``>>>`` lines then render as nested quotes), and makes a section of runnable
examples only of ``Examples:`` with its content indented under it. This
rewrites the former into the latter; the ``name: description`` entries of a
``Call arguments:`` section (which griffe shows as a note, its lines run
together) into a list; and an ``Args:`` entry naming several arguments over
two lines (``a, b, c,`` then ``d: description``), which griffe cannot read,
into one line. For the site only: the sources and their doctests stay as
they are.
"""

import re

import griffe

HEADER = re.compile(r"^Examples?:\s*$")
SECTION = re.compile(r"^[A-Z][A-Za-z ]*:\s*$")
ENTRY = re.compile(r"^(\*{0,2}\w+(?:, \*{0,2}\w+)*): ")


def grouped_arguments(text: str) -> str:
    lines = text.split("\n")
    out = []
    inside = False
    for line in lines:
        if SECTION.match(line):
            inside = line.strip() in ("Args:", "Arguments:", "Parameters:")
        previous = out[-1] if out else ""
        if (
            inside
            and line.startswith("        ")
            and previous.startswith("    ")
            and not previous.startswith("     ")
            and ":" not in previous
            and previous.rstrip().endswith(",")
        ):
            out[-1] = previous.rstrip() + " " + line.strip()
            continue
        out.append(line)
    return "\n".join(out)


def call_arguments(text: str) -> str:
    lines = text.split("\n")
    inside = False
    for i, line in enumerate(lines):
        if SECTION.match(line):
            inside = line.strip() == "Call arguments:"
        elif inside and line.startswith("    ") and not line.startswith("     "):
            lines[i] = "    " + ENTRY.sub(r"- `\1`: ", line[4:])
    return "\n".join(lines)


def keras_examples(text: str) -> str:
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        if not HEADER.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        body = []
        i += 1
        while i < len(lines) and not SECTION.match(lines[i]):
            body.append(lines[i])
            i += 1
        while body and not body[0].strip():
            body.pop(0)
        while body and not body[-1].strip():
            body.pop()
        indent = min((len(x) - len(x.lstrip()) for x in body if x.strip()), default=0)
        out.append("Examples:")
        out += ["    " + x[indent:] if x.strip() else "" for x in body]
        if i < len(lines):
            out.append("")
    return "\n".join(out)


class KerasDocstrings(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None and "Args:" in obj.docstring.value:
            obj.docstring.value = grouped_arguments(obj.docstring.value)
        if obj.docstring is not None and "xample" in obj.docstring.value:
            obj.docstring.value = keras_examples(obj.docstring.value)
        if obj.docstring is not None and "Call arguments:" in obj.docstring.value:
            obj.docstring.value = call_arguments(obj.docstring.value)
