"""Checks the built documentation site (run after `mkdocs build`).

    python docs/_check_site.py                        # every check, on site/
    python docs/_check_site.py --site site nav links  # some of them

- ``nav``: every page named in mkdocs.yml's nav has its source in docs/ and
  its page in the site;
- ``links``: every internal link (``<a href>``) and picture (``<img src>``)
  of every built page resolves to a file of the site, and every ``#anchor``
  to an element with that id on its page;
- ``signatures``: the API pages of ``Feedback``, ``FeedbackCell`` and
  ``ConvFeedback2D`` list each argument with its type and default. The
  arguments expected are those of the class's documented ``Args:`` (its
  Parameters table; ``Feedback`` also takes every argument of
  ``FeedbackCell``, as its docstring says). Each must be a named parameter of
  the signature shown (not absorbed by ``**kwargs``) with a type annotation,
  and its row of the table must show that type and its default (or
  "required" where the signature has none).

Standard library only (the docs venv has no TensorFlow). Exits 1 and lists
every problem when a check fails.
"""

import argparse
import ast
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
API_PAGE = "api/layers/index.html"
# class -> classes whose arguments it also takes (its docstring says so)
CLASSES = {
    "FeedbackCell": (),
    "Feedback": ("FeedbackCell",),
    "ConvFeedback2D": (),
}
CHECKS = ("nav", "links", "signatures")


class Page(HTMLParser):
    """The ids, links and pictures of one page, and its API blocks' text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids = set()
        self.links = []  # (tag, url)
        self.events = []  # ("start", tag, attrs) / ("end", tag) / ("data", text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])
        if tag == "a" and attrs.get("href") is not None:
            self.links.append((tag, attrs["href"]))
        if tag == "img" and attrs.get("src") is not None:
            self.links.append((tag, attrs["src"]))
        self.events.append(("start", tag, attrs))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        self.events.append(("end", tag, {}))

    def handle_endtag(self, tag):
        self.events.append(("end", tag, {}))

    def handle_data(self, data):
        self.events.append(("data", data, {}))


def parse(path):
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def nav_pages(config):
    """The .md files named in mkdocs.yml's nav (read without a YAML parser)."""
    lines = config.read_text().splitlines()
    start = lines.index("nav:")
    pages = []
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break
        match = re.search(r"(?:^\s*-\s*|:\s+)([\w./-]+\.md)\s*$", line)
        if match:
            pages.append(match.group(1))
    return pages


def built_page(site, page):
    stem = page[: -len(".md")]
    if stem == "index" or stem.endswith("/index"):
        return site / f"{stem}.html"
    return site / stem / "index.html"


def check_nav(site, problems):
    pages = nav_pages(ROOT / "mkdocs.yml")
    if not pages:
        problems.append("mkdocs.yml: no pages found in nav")
    for page in pages:
        if not (ROOT / "docs" / page).is_file():
            problems.append(f"nav: docs/{page} does not exist")
        if not built_page(site, page).is_file():
            problems.append(f"nav: {page} was not built ({built_page(site, page)})")
    return len(pages)


def check_links(site, problems):
    pages = {path: parse(path) for path in site.rglob("*.html")}
    count = 0
    for path, page in sorted(pages.items()):
        if path.name == "404.html":  # its links are absolute, to the site's root
            continue
        where = path.relative_to(site)
        for tag, url in page.links:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc or url.startswith("data:"):
                continue
            count += 1
            if parts.path:
                target = (path.parent / unquote(parts.path)).resolve()
                if url.endswith("/") or target.is_dir():
                    target = target / "index.html"
            else:
                target = path.resolve()
            if not target.is_file():
                problems.append(f"{where}: <{tag}> {url}: {target} does not exist")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{where}: {url}: no #{parts.fragment} there")
    return count


def split_top(text, sep=","):
    """Splits at ``sep`` outside brackets and quotes."""
    out, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == sep and depth == 0:
            out.append(current)
            current = ""
            continue
        current += char
    if current.strip():
        out.append(current)
    return [part.strip() for part in out]


def api_block(page, name):
    """The signature text and Parameters rows of the object ``name``."""
    anchor = f"keras_feedback.layers.{name}"
    events = page.events
    start = next(
        (
            i
            for i, e in enumerate(events)
            if e[0] == "start" and e[2].get("id") == anchor
        ),
        None,
    )
    if start is None:
        return None, None
    signature, rows = "", []
    depth_sig = None
    in_table = False
    table_depth = 0
    row, cell = None, None
    title = ""
    for kind, tag, attrs in events[start + 1 :]:
        if kind == "start" and attrs.get("id", "").startswith("keras_feedback."):
            break  # the next object of the page, or the class's first member
        classes = attrs.get("class", "").split() if kind == "start" else []
        if kind == "start" and "doc-signature" in classes and not signature:
            depth_sig = 0
        if depth_sig is not None:
            if kind == "start":
                depth_sig += 1
            elif kind == "end":
                depth_sig -= 1
                if depth_sig == 0:
                    depth_sig = -1
            elif kind == "data":
                signature += tag
            if depth_sig == -1:
                depth_sig = None
                signature = signature or " "
            continue
        if kind == "start" and "doc-section-title" in classes:
            title = "?"
        elif kind == "data" and title == "?":
            title = tag.strip()
        if kind == "start" and tag == "table" and title.startswith("Parameters"):
            in_table, table_depth = True, 0
        if not in_table:
            continue
        if kind == "start" and tag == "table":
            table_depth += 1
        elif kind == "end" and tag == "table":
            table_depth -= 1
            if table_depth == 0:
                in_table, title = False, ""
        elif kind == "start" and tag == "tr" and "doc-section-item" in classes:
            row = []
        elif kind == "end" and tag == "tr" and row is not None:
            rows.append([" ".join(c.split()) for c in row])
            row = None
        elif kind == "start" and tag == "td" and row is not None:
            row.append("")
            cell = True
        elif kind == "end" and tag == "td":
            cell = False
        elif kind == "data" and row and cell:
            row[-1] += tag
    return " ".join(signature.split()), rows


def parse_signature(text, name):
    if not text.startswith(f"{name}(") or not text.endswith(")"):
        return None
    params = {}
    for part in split_top(text[len(name) + 1 : -1]):
        if part in ("*", "/"):
            continue
        head, _, default = part.partition("=")
        pname, colon, annotation = head.partition(":")
        params[pname.strip()] = {
            "type": annotation.strip() if colon else "",
            "default": default.strip() if default else None,
        }
    return params


def same_value(a, b):
    """Whether two defaults as written are equal ('x' and "x" are)."""
    try:
        return ast.literal_eval(a) == ast.literal_eval(b)
    except (ValueError, SyntaxError):
        return a.replace("'", '"') == b.replace("'", '"')


def check_signatures(site, problems):
    path = site / API_PAGE
    if not path.is_file():
        problems.append(f"signatures: {API_PAGE} was not built")
        return 0
    page = parse(path)
    blocks = {}
    for name in CLASSES:
        signature, rows = api_block(page, name)
        if signature is None:
            problems.append(f"{name}: not on {API_PAGE}")
            continue
        documented = {}
        for row in rows:
            if len(row) != 4:
                problems.append(f"{name}: a Parameters row without 4 cells: {row}")
                continue
            names = split_top(row[0])
            if "..." in names:
                problems.append(f"{name}: the Parameters row {row[0]!r} elides names")
            for arg in names:
                if arg != "...":
                    documented[arg] = {"type": row[1], "default": row[3]}
        blocks[name] = (signature, documented)
    count = 0
    for name, also in CLASSES.items():
        if name not in blocks:
            continue
        signature, documented = blocks[name]
        params = parse_signature(signature, name)
        if params is None:
            problems.append(f"{name}: cannot read its signature {signature!r}")
            continue
        expected = [a for a in documented if not a.startswith("*")]
        for other in also:
            expected += [
                a
                for a in blocks.get(other, ("", {}))[1]
                if not a.startswith("*") and a not in expected
            ]
        if not documented:
            problems.append(f"{name}: no Parameters table (its Args: section)")
        absorbed = [a for a in expected if a not in params]
        if absorbed:
            var = [p for p in params if p.startswith("**")]
            problems.append(
                f"{name}: {len(absorbed)} of {len(expected)} documented arguments"
                f" are not in the signature {name}({', '.join(params)})"
                + (f", taken by {var[0]}" if var else "")
                + f": {', '.join(absorbed)}"
            )
        for arg in expected:
            count += 1
            if arg not in params:
                continue
            shown = params[arg]
            row = documented.get(arg)
            if not shown["type"]:
                problems.append(f"{name}({arg}): no type in the signature")
            if row is None:
                problems.append(f"{name}({arg}): not in the Parameters table")
                continue
            if not row["type"]:
                problems.append(f"{name}({arg}): no type in the Parameters table")
            want = "required" if shown["default"] is None else shown["default"]
            if not same_value(row["default"], want):
                problems.append(
                    f"{name}({arg}): the table's default {row['default']!r}"
                    f" is not the signature's {want!r}"
                )
    return count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default=str(ROOT / "site"), help="the built site")
    parser.add_argument("checks", nargs="*", help=f"of {CHECKS}; default: all")
    args = parser.parse_args(argv)
    unknown = set(args.checks) - set(CHECKS)
    if unknown:
        parser.error(f"unknown checks {sorted(unknown)}: choose from {CHECKS}")
    site = Path(args.site).resolve()
    if not (site / "index.html").is_file():
        raise SystemExit(f"{site} holds no built site: run mkdocs build first")
    problems = []
    for check in args.checks or CHECKS:
        count = globals()[f"check_{check}"](site, problems)
        print(f"{check}: {count} checked")
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problems", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
