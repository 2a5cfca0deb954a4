"""Every relative link and image in README.md and docs/*.md points at a file that exists, so a page never cites
a figure or record that has moved or gone."""

import re

import pytest
from conftest import REPO

PAGES = [REPO / "README.md", REPO / "checkpoints" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_resolve(page):
    targets = [target.split("#")[0] for target in LINK.findall(page.read_text())]
    local = [target for target in targets if target and not re.match(r"[a-z]+:", target)]
    missing = [target for target in local if not (page.parent / target).exists()]
    assert not missing, f"{page.relative_to(REPO)} links to missing files: {missing}"
