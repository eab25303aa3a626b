"""mkdocs hook: the benchmark figures, kept under benchmarks/results/, published with the
site. The Markdown pages link them relative to the repository (so the links work when
browsing the sources); the hook copies each figure into the site and points the links at
the copy."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
RESULTS = "benchmarks/results"


def on_files(files, config):
    for png in sorted((ROOT / RESULTS).glob("*/*.png")):
        rel = png.relative_to(ROOT / RESULTS).as_posix()
        files.append(File.generated(config, f"figures/{rel}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown, page, config, files):
    return markdown.replace(f"](../{RESULTS}/", "](figures/")
