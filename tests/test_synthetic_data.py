"""The synthetic corpus' catalogues are package data: the corpus stays what it was, and the data is part of its identity."""
from __future__ import annotations

import hashlib
import json
from importlib import resources

from rerank.corpus import synthetic


def _digest(records) -> str:
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()


def test_many_domains_corpus_is_unchanged_by_the_move_to_package_data():
    # Digests of the corpora the literal catalogues in synthetic.py generated (before commit "catalogues as package
    # data"); tests/test_synthetic.py pins the default 8-domain corpus.
    assert _digest(synthetic.generate(3000, seed=4, n_domains=3)) == \
        "256b4256b99334d8b39a650ab68672c489a3a932dd306224b7272489ede60fcd"
    assert _digest(synthetic.generate(60000, seed=1, n_domains=200)) == \
        "d0a8184d4e8566a0f7f212b0fd481829d680d9ee766dd5fb3cb550524256ec88"


def test_the_catalogues_are_read_from_the_package_and_part_of_the_generator_source():
    data = resources.files("rerank.corpus").joinpath("synthetic.json").read_bytes()
    assert json.loads(data)["domains"].keys() == set(synthetic.DOMAINS)
    # prepare's cache key hashes the generator source: an edited catalogue must rebuild the corpus
    assert synthetic.generator_source().endswith(data)
