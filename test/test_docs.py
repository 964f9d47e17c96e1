"""The documentation has no dead ends: every relative link in README.md and docs/*.md resolves to a
file of the repository (and to a heading of it when the link has an anchor), the README stays a
landing page, and nothing cites a file that is not in the repository."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def prose(text: str) -> str:
    """The page without fenced code blocks (a `# comment` in a shell block is not a heading)."""
    return FENCE.sub("", text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(page.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page.read_text()))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]          # http:, https:, mailto: ...


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    dead = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or ROOT not in dest.parents and dest != ROOT:
            dead.append(f"{target} (no such file in the repository)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            dead.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not dead, f"{page.relative_to(ROOT)}: dead links: " + "; ".join(dead)


def test_every_docs_page_is_reachable_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(ROOT / "README.md")}
    for page in PAGES[1:]:
        linked |= {(page.parent / t.partition("#")[0]).resolve() for t in relative_links(page) if t.partition("#")[0]}
    orphans = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"docs pages no page links to: {orphans}"


def test_readme_is_a_landing_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines: move details into docs/"
    text = "\n".join(lines)
    for command in ("./setup.sh", "./test.sh"):   # the two set-up commands .ci/run relies on
        assert command in text


def test_nothing_cites_files_outside_the_repository():
    """Older text cited a design guide and notes that never were in the repository."""
    banned = re.compile(r"guide sections? \d|\bguide \d|REFERENCE\.md|shared/docs/|docs/sections/")
    files = PAGES + [p for d in ("lightvla_ros", "test", "scripts", "launch", "benchmarks")
                     for p in (ROOT / d).rglob("*.py")] + sorted((ROOT / "requirements").glob("*.txt"))
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in files if p.name != "test_docs.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if banned.search(line)]
    assert not hits, "citations of files that are not in the repository: " + ", ".join(hits)
