"""The docs' shape: every docs/ page is in mkdocs.yml's nav; the README is short, its links resolve.

Building the site (`mkdocs build --strict`: broken links inside docs/) is `make docs`, run by CI.
"""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)
SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::([\w-]+))?"$', re.M)  # pymdownx.snippets include


def nav_pages(nav):
    for item in nav:
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for value in item.values():
                yield from nav_pages(value) if isinstance(value, list) else [value]


def test_every_docs_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = set(nav_pages(config["nav"]))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages - nav == set(), "pages missing from mkdocs.yml's nav"
    assert nav - pages == set(), "nav entries without a page"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; move the detail into docs/"


def test_readme_relative_links_exist():
    text = (ROOT / "README.md").read_text()
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]
    assert targets, "no relative links found: the pattern is broken"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert missing == [], f"README.md links to files that do not exist: {missing}"


def test_included_snippets_exist():
    # A section marker that went missing would include nothing, silently.
    for page in (ROOT / "docs").rglob("*.md"):
        for path, section in SNIPPET.findall(page.read_text()):
            source = ROOT / path
            assert source.exists(), f"{page.name} includes {path}, which does not exist"
            if section:
                text = source.read_text()
                for marker in (f"--8<-- [start:{section}]", f"--8<-- [end:{section}]"):
                    assert marker in text, f"{page.name} includes {path}:{section}; no {marker}"
