"""The README and the other pages: short, generated where they show results, and self-contained."""
import re
from pathlib import Path

import pytest

from bench import generated_docs

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", REPO / "RESULTS.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A path on the machine that wrote the page: the reader's machine has none of them.
OUTSIDE = re.compile(r"(?<![\w.$-])(\.\./|~/(?!\.cache/bench)|/(?:usr|home|work|tmp|root|opt|var|mnt|etc)/)")


def test_readme_is_short():
    n = len((REPO / "README.md").read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines; move detail to RESULTS.md or docs/"


def test_generated_tables_are_current():
    tables = generated_docs.blocks()
    for page in (REPO / name for name in generated_docs.DOCS):
        text = page.read_text()
        assert generated_docs.BLOCK.search(text), f"{page.name} has no generated table"
        assert generated_docs.refresh(text, tables, page.name) == text, \
            f"{page.name} is stale: run `python -m bench.generated_docs`"


def test_an_unknown_generated_block_is_named():
    text = "<!-- generated: nosuch -->\nx\n<!-- end generated: nosuch -->\n"
    with pytest.raises(KeyError, match="nosuch"):
        generated_docs.refresh(text, {"headline": "t"}, "README.md")


def test_a_stale_block_is_rewritten_and_the_rest_kept():
    text = "intro\n<!-- generated: t -->\nold\n<!-- end generated: t -->\noutro\n"
    assert generated_docs.refresh(text, {"t": "| new |"}, "x") == \
        "intro\n<!-- generated: t -->\n| new |\n<!-- end generated: t -->\noutro\n"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_path_leaves_the_repository(page):
    for i, line in enumerate(page.read_text().splitlines(), 1):
        assert not OUTSIDE.search(line), f"{page.name}:{i} points outside the repository: {line.strip()}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_local_link_exists(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+://|#|mailto:", target):
            continue
        assert (page.parent / target.split("#")[0]).exists(), f"{page.name} links to missing {target}"


def test_benchmark_table_has_one_row_per_saved_output_with_its_headline_figure(tmp_path):
    (tmp_path / "a.txt").write_text("# python -m bench.benchmarks.a --x 1   (commit abc, idle)\n"
                                    "machine: 2 cores\nfirst ratio 2.0x\nnot a figure\nspeed-up:  1.50 x (a vs b)\n")
    (tmp_path / "b.txt").write_text("# python -m bench.benchmarks.b   (commit def)\nno figures here\n")
    (tmp_path / "c.txt").write_text("# python -m bench.benchmarks.c   (commit 123)\n"
                                    "grid ratio: 2.33 of the goal " + "x" * 90 + " (measured 46 min) (more)\n")
    table = generated_docs._benchmark_table(tmp_path)
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == 2, table
    assert "[`a`](docs/benchmarks/a.txt)" in rows[0] and "commit abc, idle" in rows[0]
    assert "speed-up: 1.50 x (a vs b)" in rows[0] and "first ratio" not in rows[0]
    assert "grid ratio: 2.33" in rows[1] and "(measured" not in rows[1]
    assert "not a figure" not in table and "bench.benchmarks.b" not in table


def test_every_table_row_of_the_readme_is_short():
    for i, line in enumerate((REPO / "README.md").read_text().splitlines(), 1):
        if line.startswith("|"):
            assert len(line) <= 250, f"README.md:{i} is a table row of {len(line)} characters"
