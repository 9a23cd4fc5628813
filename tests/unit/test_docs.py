"""The docs say what the code does: examples decode as documented, field tables are current."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sensors import PayloadError, TelemetryDecoder
from sensors.examples import EXAMPLES, T0
from sensors.schema import fields_markdown

ROOT = Path(__file__).parents[2]
TELEMETRY = (ROOT / "docs" / "telemetry.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"```mqtt\n(?P<topic>[^\n]+)\n(?P<payload>.*?)\n```", re.DOTALL)


def test_every_example_is_in_the_docs_and_every_doc_block_is_an_example() -> None:
    blocks = [(m["topic"], m["payload"].encode()) for m in BLOCK.finditer(TELEMETRY)]
    examples = [(e.topic, e.payload) for e in EXAMPLES]
    assert blocks == examples


@pytest.mark.parametrize(
    "match", list(BLOCK.finditer(TELEMETRY)), ids=lambda m: m["topic"].split("/")[-2]
)
def test_doc_blocks_decode_as_the_page_says(match: re.Match[str]) -> None:
    dec = TelemetryDecoder(clock=lambda: T0 / 1000 + 60)
    before = TELEMETRY[: match.start()].rstrip().splitlines()[-1]
    said = re.search(r"the reason contains `(?P<why>[^`]+)`", before)
    if said is None:
        out = dec.decode(match["topic"], match["payload"].encode())
        assert out.readings + len(out.events) + len(out.statuses) >= 1
    else:
        with pytest.raises(PayloadError) as info:
            dec.decode(match["topic"], match["payload"].encode())
        assert said["why"] in str(info.value)


def test_field_tables_are_generated_from_the_schema() -> None:
    assert fields_markdown() in TELEMETRY


def test_readme_gives_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme
    assert "make test" in readme
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test", "lint", "bench"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci
