"""The README's and docs/'s relative links point at files that exist, and their #anchors at headings
that exist (GitHub's heading anchors), so moving a section cannot leave a dead link behind."""
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path):
    """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    found = set()
    in_code = False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and re.match(r"#{1,6} ", line):
            text = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return found


def test_github_anchor_rule():
    assert anchors(os.path.join(ROOT, "README.md")) >= {"results", "where-the-sweeps-stand",
                                                         "figure-3-the-marginal-likelihood"}


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_and_anchors_resolve(page):
    text = open(os.path.join(ROOT, page), encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)          # code blocks hold no links
    dead = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):                        # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else os.path.join(ROOT, page)
        if not os.path.exists(file):
            dead.append(f"{target} (no such file)")
        elif anchor and file.endswith(".md") and anchor not in anchors(file):
            dead.append(f"{target} (no such heading)")
    assert not dead, f"{page}: dead links: {', '.join(dead)}"
