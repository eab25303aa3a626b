"""The documentation site builds with warnings as errors, and what a reader sees is what the
docstrings say: no text taken as HTML (a placeholder such as "layers.<i>.<name>" would
vanish and turn the rest italic), the public API only, parameters as tables.

Needs mkdocs with the docs extra (`make test` installs it); deselect with `-m "not docs"`."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.docs,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None
            for m in ("mkdocs", "material", "mkdocstrings_handlers.python")),
        reason='building the site needs the docs extra: pip install ".[docs]"',
    ),
]

# the elements Markdown, mkdocstrings and the theme put inside a page's <article>; anything
# else there (<i>, <name>, <path>, ...) is text of a docstring or page read as HTML
ALLOWED = {
    "a", "abbr", "article", "blockquote", "br", "code", "del", "details", "div", "em", "h1",
    "h2", "h3", "h4", "h5", "h6", "hr", "img", "li", "ol", "p", "pre", "small", "span",
    "strong", "sub", "summary", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
}
INTERNALS = ("check_loss", "prepare_data", "step_lock", "run_epoch", "Trainer",
             "evaluate_batches", "check_inputs")


class _ArticleTags(HTMLParser):
    """The tags inside <article>, each with the text just before it (to find it)."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.found: list[tuple[str, str]] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "article":
            self.depth += 1
        if self.depth:
            self.found.append((tag, self.text[-60:]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "article":
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.text += data


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_no_docstring_or_page_text_is_read_as_html(site):
    stray = []
    for page in sorted(site.rglob("*.html")):
        parser = _ArticleTags()
        parser.feed(page.read_text(encoding="utf-8"))
        stray += [f"{page.relative_to(site)}: <{tag}> after {before!r}"
                  for tag, before in parser.found if tag not in ALLOWED]
    assert not stray, "\n".join(stray[:20])


def test_the_api_reference_lists_the_public_api_only(site):
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    ids = set(re.findall(r'id="([^"]+)"', html))
    for public in ("mlpx.Sequential.predict", "mlpx.Sequential.__call__", "mlpx.MLP",
                   "mlpx.load", "mlpx.sklearn.MLPClassifier.fit",
                   "mlpx.callbacks.CSVLogger", "mlpx.callbacks.TensorBoard"):
        assert public in ids, public
    shown = [name for name in INTERNALS if any(name in i for i in ids)]
    assert not shown, f"internals in the API reference: {shown}"


def test_parameters_are_rendered_as_tables(site):
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    for obj, param in [("mlpx.MLP", "sizes"), ("mlpx.Sequential", "input_dim"),
                       ("mlpx.Sequential.predict", "batch_size"),
                       ("mlpx.Sequential.evaluate", "sample_weight"),
                       ("mlpx.Sequential.save", "path"), ("mlpx.load", "custom_objects"),
                       ("mlpx.sklearn.MLPClassifier", "hidden_layer_sizes"),
                       ("mlpx.callbacks.EarlyStopping", "patience")]:
        start = html.index(f'id="{obj}"')
        section = html[start:start + 20000]
        assert re.search(rf"<table>.*?<code>{param}</code>", section, re.S), (obj, param)


def test_getting_started_gives_install_commands_that_work(site):
    md = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    commands = re.findall(r"^\s*(pip install .*)$", md, re.M)
    assert commands
    # the package is installed from a clone (or a git URL), not by name from an index
    assert all(not re.match(r'pip install "?mlpx\b', c) for c in commands), commands
