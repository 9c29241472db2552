"""The embedded synthetic corpus: format, determinism, and that it reproduces the problem."""
from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict

import pytest

from rerank.corpus import synthetic
from rerank.corpus.synthetic import AMBIGUOUS_TITLES, DEVICES, DOMAINS, generate, iter_records, write_jsonl

SLOT = re.compile(r"\[\s*([^\[\]:\s]+)\s*:\s*([^\[\]]*?)\s*\]")
KEYS = {"id", "locale", "partition", "scenario", "intent", "utt", "annot_utt", "device"}
MEDIA = ("Music", "Books", "Video")


def resolve(annot: str) -> str:
    return " ".join(SLOT.sub(lambda m: m.group(2), annot).split())


def slots(annot: str) -> list[tuple[str, str]]:
    return SLOT.findall(annot)


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    return generate(2000, seed=0)


@pytest.fixture(scope="module")
def big() -> list[dict]:
    return generate(20000, seed=11)


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = generate(500, seed=3)
    assert a == generate(500, seed=3)
    assert a != generate(500, seed=4)
    assert [r["utt"] for r in a] != [r["utt"] for r in generate(500, seed=4)]


def test_generate_is_the_list_of_iter_records():
    assert generate(300, seed=7, dev_fraction=0.1, test_fraction=0.2) == list(
        iter_records(300, seed=7, dev_fraction=0.1, test_fraction=0.2)
    )


def test_text_does_not_depend_on_size_or_split_fractions():
    small = generate(200, seed=5)
    larger = generate(400, seed=5, dev_fraction=0.3, test_fraction=0.0)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "partition"} for r in rs]  # noqa: E731
    assert strip(small) == strip(larger[:200])


def test_record_format(corpus):
    ids = [r["id"] for r in corpus]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "syn-000000"
    for r in corpus:
        assert set(r) == KEYS
        assert r["locale"] == "en-US"
        assert r["partition"] in ("train", "dev", "test")
        assert r["device"] in DEVICES
        assert all(isinstance(v, str) for v in r.values())
        # Intents are domain-qualified and lower-case.
        assert r["intent"] == r["intent"].lower()
        assert r["intent"].startswith(r["scenario"].lower() + "_")
        assert r["intent"] in synthetic.INTENTS[r["scenario"]]


def test_all_domains_present_and_frequencies_unequal(corpus):
    counts = Counter(r["scenario"] for r in corpus)
    assert set(counts) == set(DOMAINS) and len(DOMAINS) == 8
    assert DOMAINS == ("Music", "Books", "Video", "Weather", "Shopping", "SmartHome", "Notifications", "Knowledge")
    for common in ("Music", "Knowledge"):
        for rare in ("Books", "Notifications"):
            assert counts[common] > counts[rare]


def test_every_domain_has_two_to_five_intents():
    assert set(synthetic.INTENTS) == set(DOMAINS)
    for intents in synthetic.INTENTS.values():
        assert 2 <= len(intents) <= 5


def test_partition_fractions(corpus):
    counts = Counter(r["partition"] for r in corpus)
    assert counts["dev"] == pytest.approx(300, abs=1)
    assert counts["test"] == pytest.approx(300, abs=1)
    other = Counter(r["partition"] for r in generate(1000, seed=1, dev_fraction=0.0, test_fraction=0.25))
    assert other["dev"] == 0 and other["test"] == 250 and other["train"] == 750
    # Random positions, not blocks: dev records are spread over the corpus.
    dev_positions = [i for i, r in enumerate(corpus) if r["partition"] == "dev"]
    assert dev_positions[0] < 200 and dev_positions[-1] > 1800


def test_tiny_corpus_keeps_a_train_record():
    records = generate(2, seed=0, dev_fraction=0.45, test_fraction=0.45)
    assert [r["partition"] for r in records].count("train") >= 1


def test_utt_is_the_resolved_annotation(big):
    for r in big:
        assert r["utt"] == resolve(r["annot_utt"]), r
        assert r["utt"] == r["utt"].lower()
        assert r["utt"] == " ".join(r["utt"].split())
        # Every bracket is a well-formed slot; nothing else carries brackets.
        assert SLOT.sub("", r["annot_utt"]).count("[") == 0
        assert SLOT.sub("", r["annot_utt"]).count("]") == 0
        for slot_type, value in slots(r["annot_utt"]):
            assert slot_type in synthetic.SLOT_TYPES
            assert value and " : " not in value and "[" not in value and "]" not in value
            assert value == " ".join(value.split())


def test_device_never_in_text(big):
    for r in big:
        assert "echo" not in r["utt"] and "fire tv" not in r["utt"] and "fire_tv" not in r["utt"]


def test_device_distribution_differs_by_domain(big):
    by_domain: dict[str, Counter] = defaultdict(Counter)
    for r in big:
        by_domain[r["scenario"]][r["device"]] += 1
    share = {d: c["fire_tv"] / sum(c.values()) for d, c in by_domain.items()}
    assert share["Video"] > 0.5
    assert share["Music"] < 0.3
    for d in ("Weather", "Shopping", "SmartHome", "Notifications", "Knowledge", "Books"):
        assert share[d] < 0.15


def test_ambiguous_titles_cross_media_domains(big):
    titles = set(AMBIGUOUS_TITLES)
    assert 15 <= len(titles) <= 30
    domains_of: dict[str, set] = defaultdict(set)
    texts_of: dict[str, set] = defaultdict(set)
    for r in big:
        if r["scenario"] in MEDIA:
            for _, value in slots(r["annot_utt"]):
                if value in titles:
                    domains_of[value].add(r["scenario"])
            texts_of[r["utt"]].add(r["scenario"])
    assert any(len(ds) >= 2 for ds in domains_of.values())
    assert sum(len(ds) == 3 for ds in domains_of.values()) >= 10
    # The very same text occurs in several domains: genuinely ambiguous.
    assert len(texts_of["play mary poppins"]) >= 2
    assert sum(len(ds) >= 2 for ds in texts_of.values()) >= 20


def test_share_of_ambiguous_short_templates(big):
    titles = set(AMBIGUOUS_TITLES)
    forms = {t.replace("{title}", x) for t in synthetic._AMBIGUOUS_TEMPLATES for x in titles}
    for domain in MEDIA:
        utts = [r["utt"] for r in big if r["scenario"] == domain]
        share = sum(u in forms for u in utts) / len(utts)
        assert 0.18 < share < 0.38, (domain, share)


def test_some_noise_but_not_much(big):
    # A hesitation in front is one kind of noise; no template starts with one.
    hesitant = sum(r["utt"].split()[0] in ("um", "uh", "hmm") for r in big)
    assert 0 < hesitant / len(big) < 0.03


def test_cross_domain_wording_overlap(big):
    firsts: dict[str, set] = defaultdict(set)
    for r in big:
        firsts[" ".join(r["utt"].split()[:2])].add(r["scenario"])
    assert {"SmartHome", "Video"} <= firsts["turn on"]
    assert {"Weather", "Knowledge"} <= firsts["what is"]
    single = defaultdict(set)
    for r in big:
        single[r["utt"]].add(r["scenario"])
    assert set(MEDIA) <= single["pause"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_utterances": 0},
        {"n_utterances": -5},
        {"dev_fraction": -0.1},
        {"dev_fraction": 1.0},
        {"test_fraction": 1.5},
        {"test_fraction": math.nan},
        {"dev_fraction": 0.5, "test_fraction": 0.5},
        {"dev_fraction": 0.7, "test_fraction": 0.4},
        {"dev_fraction": "lots"},
    ],
)
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        generate(**kwargs)
    # The streaming version checks at the call, not at the first record.
    with pytest.raises(ValueError):
        iter_records(**kwargs)


def test_non_integer_size_is_a_type_error():
    with pytest.raises(TypeError):
        generate(10.5)
    with pytest.raises(TypeError):
        generate(True)


def test_write_jsonl_round_trip_and_atomic(tmp_path):
    records = generate(50, seed=2)
    path = tmp_path / "sub" / "syn.jsonl"
    write_jsonl(path, iter(records))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == records
    write_jsonl(path, records[:10])  # replaces, leaves no temporary file behind
    assert len(path.read_text(encoding="utf-8").splitlines()) == 10
    assert sorted(p.name for p in path.parent.iterdir()) == ["syn.jsonl"]


def test_write_jsonl_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "syn.jsonl"
    write_jsonl(path, generate(5))
    before = path.read_bytes()

    def broken():
        yield from generate(3)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl(path, broken())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["syn.jsonl"]


# --------------------------------------------------------------------------- many domains (generated skills)


def test_the_default_corpus_is_the_eight_domains_unchanged():
    import hashlib

    assert generate(3000, seed=3) == generate(3000, seed=3, n_domains=8)
    # The digest of the corpus that the code before data.synthetic.n_domains generated
    # (commit 7d0a422): adding generated skills must not change the default corpus.
    digest = hashlib.sha256(json.dumps(generate(5000, seed=0), sort_keys=True).encode()).hexdigest()
    assert digest == "c40ac00efe73f0235a6913c6d904cc3ef3548e9765b6b14aa040b6f5cf7664f3"


def test_fewer_domains_take_the_first_ones():
    recs = generate(2000, n_domains=3)
    assert {r["scenario"] for r in recs} == {"Music", "Books", "Video"}


def test_many_domains_are_deterministic_realistic_and_unequal():
    from collections import Counter

    from rerank.corpus.annotation import parse_annotation
    from rerank.corpus.skills import skill_specs

    a, b = generate(60000, seed=1, n_domains=200), generate(60000, seed=1, n_domains=200)
    assert a == b
    assert generate(2000, seed=2, n_domains=200) != generate(2000, seed=1, n_domains=200)
    domains = Counter(r["scenario"] for r in a)
    assert len(domains) == 200 and set(DOMAINS) <= set(domains)
    skills = [d for d in domains if d not in DOMAINS]
    counts = sorted(domains[d] for d in skills)
    assert counts[-1] > 2.5 * counts[0]  # unequal traffic, some small skills
    specs = skill_specs(192, seed=1)
    assert set(specs) == set(skills) and all(2 <= len(s["intents"]) - 1 <= 5 for s in specs.values())
    for r in a[:2000]:
        assert r["intent"].startswith(r["scenario"].lower() + "_") or r["scenario"] in DOMAINS
        parse_annotation(r["annot_utt"])  # valid brackets
    # skills of one theme share words and slot values: vocabulary overlaps across domains
    words: dict[str, set] = {}
    for r in a:
        words.setdefault(r["scenario"], set()).update(r["utt"].split())
    shared = [w for w in words[skills[0]] if sum(w in words[d] for d in skills[1:]) >= 5]
    assert len(shared) > 10


def test_emission_cap_and_negative_cap():
    import numpy as np

    from rerank.hypotheses.emit import emit_mask

    dc = np.array([[0.9, 0.8, 0.7, 0.6, 0.02], [0.001, 0.002, 0.003, 0.004, 0.005]])
    mask = emit_mask(dc, {"mode": "floor", "dc_floor": 0.01, "top_domains": 2, "max_domains": 3})
    assert mask.tolist() == [[True, True, True, False, False], [False, False, False, True, True]]
    assert emit_mask(dc, {"mode": "floor", "dc_floor": 0.01, "top_domains": 2})[0].sum() == 5
    # the cap holds in either mode
    assert emit_mask(dc, {"mode": "all", "max_domains": 2}).sum(axis=1).tolist() == [2, 2]
    assert emit_mask(dc, {"mode": "all"}).all()
