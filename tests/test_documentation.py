"""The documentation's own structure: every relative link and #anchor of README.md, benchmarks/README.md and
documentation/ resolves; every generated-table marker (benchmarks/lib/fill_markers.py) is one begin/end pair per file;
results.md is one screen per question (a verdict table first, sections 1-5, under 400 lines). Nothing is run."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "documentation").rglob("*.md"))]
RESULTS = ROOT / "documentation" / "results.md"
MAX_RESULTS_LINES = 400  # issue 34: results.md stays under 400 lines; the history goes to experiments/


def without_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> Iterator[str]:
    """The anchors of a Markdown text's headings (outside code blocks), a repeated one numbered as GitHub does."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", without_code(text), flags=re.M):
        s = slug(heading)
        seen[s] = seen.get(s, -1) + 1
        yield s if seen[s] == 0 else f"{s}-{seen[s]}"


def test_slug_matches_github():
    assert slug("Time-budget planning (issue 19): the rule and the planner's word") == \
        "time-budget-planning-issue-19-the-rule-and-the-planners-word"
    assert slug("A new expert from a few cases (`diffoseg_add_rater`)") == "a-new-expert-from-a-few-cases-diffoseg_add_rater"
    assert slug("Full LIDC (15,548 crops) and BU-BIL 1+2A+3 (116 images)") == \
        "full-lidc-15548-crops-and-bu-bil-12a3-116-images"
    assert list(anchors("# A\n```\n# not\n```\n## A\n")) == ["a", "a-1"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(doc):
    for target in re.findall(r"\]\(([^)\s]+)\)", without_code(doc.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file) if file else doc
        assert path.exists(), f"{doc.relative_to(ROOT)}: link to a missing file: {target}"
        if anchor and path.suffix == ".md":
            assert anchor in set(anchors(path.read_text())), f"{doc.relative_to(ROOT)}: no heading for #{anchor} in {file or doc.name}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_table_markers_pair_once_per_file(doc):
    text = doc.read_text()
    begins = re.findall(r"<!-- begin (\S+) -->", text)
    ends = re.findall(r"<!-- end (\S+) -->", text)
    assert len(begins) == len(set(begins)), f"{doc}: a marker name twice: fill_markers.py refuses it"
    assert sorted(begins) == sorted(ends), f"{doc}: unpaired markers {set(begins) ^ set(ends)}"
    for name in begins:
        assert text.index(f"<!-- begin {name} -->") < text.index(f"<!-- end {name} -->"), f"{doc}: {name}"


def test_results_is_one_screen_per_question():
    text = RESULTS.read_text()
    assert len(text.splitlines()) < MAX_RESULTS_LINES, "results.md: move history to documentation/experiments/"
    sections = re.findall(r"^## (.+)$", without_code(text), flags=re.M)
    assert sections[0] == "Verdicts"
    assert [s.split(".")[0] for s in sections[1:]] == ["1", "2", "3", "4", "5"]  # other documents cite the numbers
    verdicts = text.split("## Verdicts", 1)[1].split("\n## ", 1)[0]
    assert verdicts.strip().startswith("| question | answer in one line | the number against the goal | section |")
    cells = re.findall(r"\| \[(\d)\]\(#([^)]+)\) \|$", verdicts, flags=re.M)
    assert {n for n, _ in cells} == {"1", "2", "3", "4", "5"}, "results.md: a verdict row per section at least"
    assert {a for _, a in cells} <= set(anchors(text))
    section1 = text.split("\n## 1.", 1)[1]
    first = re.search(r"^### (.+)$", section1, flags=re.M).group(1)
    assert "0.5 h" in first, f"results.md: the first real-data answer is the current one (0.5 h), not {first!r}"
