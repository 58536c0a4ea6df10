"""The README and docs/*.md against the suite: the quick start comes first, each heading's claims are
mapped to the tests that guard them in tests/CLAIMS.md (and those tests exist), and every link and
cited test file resolves. (tests/integration/test_readme.py runs the pages' commands.)"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
CLAIMS = REPO / "tests" / "CLAIMS.md"
TEST_REF = re.compile(r"`((?:unit|integration|slurm)/[\w/]+\.py|gpu_build_check\.py)::(\w+)`")
NOT_TESTED = "not tested:"  # a line that says why a statement needs no test (a measured number, advice, a link)


def without_code(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def headings(text: str, levels: str = "2,3") -> list[str]:
    return re.findall(rf"^#{{{levels}}} (.+?)\s*$", without_code(text), re.M)


def claims_by_page() -> dict[str, dict[str, list[str]]]:
    """CLAIMS.md: `## PAGE`, then `### HEADING` as in that page, then one `- claim -> tests` line per claim."""
    pages: dict[str, dict[str, list[str]]] = {}
    section: list[str] = []
    for line in CLAIMS.read_text().splitlines():
        if line.startswith("## "):
            current = pages.setdefault(line[3:].strip(), {})
        elif line.startswith("### "):
            section = current.setdefault(line[4:].strip(), [])
        elif line.startswith("- ") and pages:
            section.append(line)
        elif line.startswith("  ") and section:  # a claim continued on the next line
            section[-1] += " " + line.strip()
    return pages


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_quick_start_comes_first():
    """A clean clone shows, within 40 lines: the two set-up commands, then train, evaluate, render and
    submit, each through .venv/bin/ or after an explicit activate line."""
    top = "\n".join(README.read_text().splitlines()[:40])
    assert "\n## Quick start\n" in top
    commands = [re.split(r"\s+#\s", line)[0].strip()
                for line in re.search(r"```bash\n(.*?)```", top, re.S).group(1).splitlines()]
    assert commands[:2] == ["make smoke", "make test"], commands
    activated = False
    for command in commands[2:]:
        activated |= command == "source .venv/bin/activate"
        tool = re.sub(r"^(\w+=\S+ )*", "", command).split()[0]  # after any VAR=value
        assert activated or tool.startswith(".venv/bin/") or tool in ("make", "sbatch"), command
    for step in (" train ", "mnist-hpc evaluate ", "mnist-hpc slurm render ", "sbatch "):
        assert any(step in f" {command} " for command in commands), step


def test_every_heading_is_in_claims_and_every_claim_names_its_tests():
    """tests/CLAIMS.md follows the pages heading by heading (a new or renamed heading must be audited);
    each claim names existing tests, or says why none is needed."""
    claims = claims_by_page()
    for page in PAGES:
        name = str(page.relative_to(REPO))
        assert name in claims, f"tests/CLAIMS.md has no '## {name}' section"
        assert list(claims[name]) == headings(page.read_text()), f"tests/CLAIMS.md's headings for {name} differ"
    assert sorted(claims) == sorted(str(p.relative_to(REPO)) for p in PAGES), "CLAIMS.md names a page not audited"
    for name, sections in claims.items():
        for heading, lines in sections.items():
            assert lines, f"CLAIMS.md: {name} / {heading} lists no claim (say '- {NOT_TESTED} why' if none)"
            for line in lines:
                refs = TEST_REF.findall(line)
                assert refs or NOT_TESTED in line, f"CLAIMS.md: {name} / {heading}: no test named in {line!r}"
                for file, test in refs:
                    source = REPO / "tests" / file
                    assert source.is_file(), f"CLAIMS.md: {file} does not exist ({line!r})"
                    assert re.search(rf"^(async )?def {test}\(", source.read_text(), re.M), \
                        f"CLAIMS.md: {file}::{test} does not exist"


def test_links_and_cited_test_files_resolve():
    """Links between the pages (files and #anchors) and every tests/... file they cite."""
    for page in [*PAGES, CLAIMS, *sorted((REPO / "benchmarks").glob("*.md"))]:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.relative_to(REPO)}: broken link {target}"
            if anchor and linked.suffix == ".md":
                anchors = {slug(h) for h in headings(linked.read_text(), "1,6")}
                assert anchor in anchors, f"{page.relative_to(REPO)}: no heading for #{anchor} in {path or page.name}"
        for cited in re.findall(r"\btests/[\w/.-]+\.py\b", text):
            assert (REPO / cited).is_file(), f"{page.relative_to(REPO)} cites {cited}, which does not exist"
