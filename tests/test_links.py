"""Every relative link in the user-facing Markdown resolves inside a fresh clone.

Covers README.md, docs/*.md and the model card (the committed release card and the text
``srunet.model.card.readme_text`` writes): a link to a file outside the repository (e.g. a
sibling ``../shared/`` folder that only exists on a developer's machine) fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)  # links in code are examples, not links


def relative_links(markdown: str) -> list[str]:
    """Link targets that point into the file system (no URL scheme, no pure #anchor)."""
    targets = LINK.findall(CODE.sub("", markdown))
    return [t.split("#")[0] for t in targets
            if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", t) and not t.startswith("#")]


def broken(markdown: str, base: Path) -> list[str]:
    """Targets that do not exist, or resolve outside the repository, relative to ``base``."""
    bad = []
    for target in relative_links(markdown):
        resolved = (base / target).resolve()
        if not resolved.exists() or not resolved.is_relative_to(ROOT):
            bad.append(target)
    return bad


def test_link_checker_catches_outside_and_missing_targets(tmp_path):
    text = ("[a](../shared/ACQUISITION.md) [b](docs/acquisition.md) [c](https://x.org) "
            "[d](#top) ![e](docs/missing.png) `[f](nowhere.md)` [g](README.md#layout)")
    assert relative_links(text) == ["../shared/ACQUISITION.md", "docs/acquisition.md",
                                    "docs/missing.png", "README.md"]
    assert broken(text, ROOT) == ["../shared/ACQUISITION.md", "docs/missing.png"]


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                                  ROOT / "model" / "release" / "README.md"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_resolve(path):
    assert broken(path.read_text(encoding="utf-8"), path.parent) == []


def test_acquisition_contract_is_in_the_repository():
    text = (ROOT / "docs" / "acquisition.md").read_text(encoding="utf-8")
    for number in ("192 nm", "139 nm", "85 nm", "42.5 nm", "0.1-0.3", "30-3000"):
        assert number in text
    assert "docs/acquisition.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_model_card_text_links_resolve(tiny_checkpoint):
    from srunet.model import card
    from srunet.model.checkpoint import load_checkpoint
    from srunet.model.record import card_record

    checkpoint = load_checkpoint(tiny_checkpoint)
    record = card_record(checkpoint=checkpoint, input_halo=24, min_size=64, step=8,
                         grid=8, sample_metrics=None)
    text = card.readme_text(name="srunet test", checkpoint=checkpoint, record=record)
    # the card is the package's README.md: its links resolve from the package folder
    assert broken(text, ROOT / "model" / "release") == []
