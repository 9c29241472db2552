from pathlib import Path

from rerank.hypotheses.schema import render_schema_doc


def test_data_doc_is_generated_from_the_schema():
    doc = Path(__file__).parents[1] / "docs" / "DATA.md"
    assert doc.read_text() == render_schema_doc(), "docs/DATA.md is stale: regenerate it with render_schema_doc()"
