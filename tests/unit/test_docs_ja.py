"""The Japanese docs are kept in step with the English (issue 18): every page under docs/ and
the README has a twin under docs/ja/ with the same headings (levels, in order), the same fenced
code blocks byte for byte, the note pointing at its English original, and links that resolve."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS, JA = ROOT / "docs", ROOT / "docs" / "ja"
PAIRS = [(p, JA / p.name) for p in sorted(DOCS.glob("*.md"))] + [(ROOT / "README.md", JA / "README.md")]
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def split(text: str) -> tuple[list[int], list[str], list[str]]:
    """(heading levels in order, fenced code blocks, prose lines) of a Markdown page."""
    levels, blocks, prose, block = [], [], [], None
    for line in text.splitlines():
        if FENCE.match(line):
            if block is None:
                block = [line]
            else:
                block.append(line)
                blocks.append("\n".join(block))
                block = None
            continue
        if block is not None:
            block.append(line)
            continue
        prose.append(line)
        m = re.match(r"^(#{1,6}) ", line)
        if m:
            levels.append(len(m.group(1)))
    assert block is None, "unclosed code block"
    return levels, blocks, prose


@pytest.mark.parametrize("en,ja", PAIRS, ids=[p[0].name for p in PAIRS])
def test_every_page_has_a_japanese_twin_in_step(en, ja):
    assert ja.exists(), f"{en.relative_to(ROOT)} has no Japanese twin {ja.relative_to(ROOT)}: translate it"
    e_levels, e_blocks, _ = split(en.read_text())
    j_levels, j_blocks, j_prose = split(ja.read_text())
    assert j_levels == e_levels, f"{ja.name}: headings differ from the English (levels {j_levels} vs {e_levels})"
    assert len(j_blocks) == len(e_blocks), f"{ja.name}: {len(j_blocks)} code blocks, the English has {len(e_blocks)}"
    for i, (a, b) in enumerate(zip(j_blocks, e_blocks)):
        assert a == b, f"{ja.name}: code block {i + 1} differs from the English"
    original = Path("../../README.md") if en.name == "README.md" and en.parent == ROOT else Path("..") / en.name
    assert any(f"[{original}]({original})" in line for line in j_prose[:5]), \
        f"{ja.name}: the note naming its English original ({original}) is missing near the top"


@pytest.mark.parametrize("page", sorted(JA.glob("*.md")), ids=lambda p: p.name)
def test_japanese_pages_have_an_english_original_and_links_resolve(page):
    en = ROOT / "README.md" if page.name == "README.md" else DOCS / page.name
    assert en.exists(), f"{page.name} has no English original"
    _, _, prose = split(page.read_text())
    for line in prose:
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            assert path.exists(), f"{page.name}: link {target} does not resolve"
