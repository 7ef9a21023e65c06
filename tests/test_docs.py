"""The README and the documentation pages: every relative link (and its anchor) resolves, every link into the
repository on GitHub names a file that exists, every README section a page includes exists, and CI runs the
README's test command."""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
REPO_URL = re.compile(r"https://github\.com/mkefast/mkefast/(?:blob|tree)/main/(?P<path>[^#?]*)")
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
SNIPPET = re.compile(r'^--8<-- "(?P<file>[^":]+)(?::(?P<section>[\w-]+))?"\s*$', re.MULTILINE)


def _prose(text: str) -> str:
    """`text` without fenced code blocks and inline code, where a bracket is not a link."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """The anchor of a heading, as the site's Markdown (and GitHub, for these ASCII headings) makes it."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _prose(page.read_text()), flags=re.MULTILINE)
    return {_slug(h) for h in headings}


def _links(page: Path) -> list[str]:
    return [m["target"] for m in LINK.finditer(_prose(page.read_text()))]


def test_the_pages_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/index.md", "docs/troubleshooting.md", "docs/memory_model.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for target in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: (repository URLs: below)
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    assert not broken, broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_into_the_repository_name_existing_files(page):
    missing = [m["path"] for target in _links(page) if (m := REPO_URL.match(target))
               if not (ROOT / m["path"]).exists()]
    assert not missing, missing


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_included_sections_exist(page):
    for m in SNIPPET.finditer(page.read_text()):
        source = ROOT / m["file"]
        assert source.is_file(), m[0]
        if m["section"]:
            text = source.read_text()
            start, end = f"--8<-- [start:{m['section']}]", f"--8<-- [end:{m['section']}]"
            assert start in text and end in text, f"{m[0]}: no {start} ... {end} markers in {m['file']}"
            assert text.index(start) < text.index(end)


def test_the_anchor_slugs_match_the_site():
    assert _slug("No C++ compiler") == "no-c-compiler"
    assert _slug("Backends and performance") == "backends-and-performance"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if 'pip install ".[test]"' in ln)
    ci = (ROOT / ".ci" / "run").read_text()
    steps = line.split(" && ")
    # After the README's venv creation and activation (CI makes its own fresh venv): the same commands.
    assert steps[2:] == ["pip install torch==2.13.0", 'pip install ".[test]"', "python -m pytest -q -n auto"], steps
    assert "pip install torch==2.13.0\n" in ci
    assert 'pip install ".[test]" && python -m pytest -q -n auto\n' in ci


def test_grouped_parameter_entries_are_split_for_the_api_reference():
    """docs/_ext/grouped_args.py (the griffe extension of mkdocs.yml) gives each grouped name its own entry."""
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("grouped_args", ROOT / "docs" / "_ext" / "grouped_args.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = (
        "Summary.\n\n"
        "Args:\n"
        "    x: `[B, d]` features.\n"
        "    lr, weight_decay: AdamW settings,\n"
        "        shared.\n"
        "    a, b (int): two ints.\n\n"
        "Returns:\n"
        "    x, y: not parameters, left alone.\n"
    )
    assert module.split_grouped_args(doc) == (
        "Summary.\n\n"
        "Args:\n"
        "    x: `[B, d]` features.\n"
        "    lr: AdamW settings,\n"
        "        shared.\n"
        "    weight_decay: AdamW settings,\n"
        "        shared.\n"
        "    a (int): two ints.\n"
        "    b (int): two ints.\n\n"
        "Returns:\n"
        "    x, y: not parameters, left alone.\n"
    ).rstrip("\n")
