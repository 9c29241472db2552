"""The embedded default corpus: a synthetic voice-assistant traffic sample.

It exists to reproduce the problem the re-rankers solve, not to be pretty:

- the same short request ("play mary poppins") is genuinely ambiguous across
  Music, Books and Video, because a shared catalog of titles exists in all three
  and a fair share of their traffic uses the same short templates;
- the device (``echo``, ``echo_show``, ``fire_tv``) is drawn per domain and never
  shows in the text, so only a model that reads the context can resolve the
  ambiguity (on a Fire TV "play mary poppins" is mostly Video);
- wording overlaps elsewhere too ("turn on ..." SmartHome vs Video subtitles,
  "what is ..." Knowledge vs Weather, "pause" / "stop" in every media domain);
- domain frequencies are unequal, so per-domain classifiers see different
  priors and their scores are not on one scale;
- a few per cent of requests lose or garble a filler word, so that no
  recognizer is perfect even on unambiguous traffic.

Records are MASSIVE-format dicts (``id, locale, partition, scenario, intent,
utt, annot_utt, device``); ``annot_utt`` carries the slots in bracket form,
``play [song_name : mary poppins] by [artist_name : julie andrews]``.

Generation is deterministic for a seed, streams (``iter_records``), and the
content of the first ``n`` records does not depend on ``n`` or on the
partition fractions: partitions come from a separate random stream.
"""
from __future__ import annotations

import json
import math
import operator
import os
import re
import tempfile
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from random import Random

__all__ = [
    "AMBIGUOUS_TITLES",
    "DEVICES",
    "DOMAINS",
    "INTENTS",
    "SLOT_TYPES",
    "generate",
    "iter_records",
    "write_jsonl",
]


# The catalogs, domain specs and noise words are package data (synthetic.json, with
# notes on why each list is as it is); this module compiles them into sampling tables.
_DATA_FILE = resources.files(__package__).joinpath("synthetic.json")
_DATA = json.loads(_DATA_FILE.read_text(encoding="utf-8"))


def _frozen(value):
    """JSON lists as tuples: the specs stay immutable and compare equal to the literals they were."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    return value


DEVICES: tuple[str, ...] = _frozen(_DATA["devices"])
LOCALE = "en-US"
AMBIGUOUS_TITLES: tuple[str, ...] = _frozen(_DATA["ambiguous_titles"])
CATALOGS: dict[str, tuple[str, ...]] = {
    "titles": AMBIGUOUS_TITLES,
    **{name: _frozen(values) + (AMBIGUOUS_TITLES if name in _DATA["titles_also_in"] else ())
       for name, values in _DATA["catalogs"].items()},
}
_AMBIGUOUS_TEMPLATES: tuple[str, ...] = _frozen(_DATA["ambiguous_templates"])
DOMAIN_SPECS: dict[str, dict] = _frozen(_DATA["domains"])
DOMAINS: tuple[str, ...] = tuple(DOMAIN_SPECS)

# Share of utterances with a dropped or garbled filler word.
NOISE_RATE = 0.03
_FILLER_SWAPS: dict[str, tuple[str, ...]] = _frozen(_DATA["filler_swaps"])
_HESITATIONS: tuple[str, ...] = _frozen(_DATA["hesitations"])


# ---------------------------------------------------------------------------
# Compilation of the data into sampling tables (done once, at import).
# ---------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(\w+)(?:\|(\w+))?\}")
_BAD_VALUE = re.compile(r"[\[\]{}:]|\s{2,}|^\s|\s$")


@dataclass(frozen=True)
class _Template:
    intent: str
    utt_fmt: str  # "play {0} by {1}"
    annot_fmt: str  # "play [song_name : {0}] by [artist_name : {1}]"
    slot_types: tuple[str, ...]
    catalogs: tuple[tuple[str, ...], ...]
    # Word tokens for the noisy path: a str is a literal word, an int the
    # index of a slot value.
    words: tuple[str | int, ...]


@dataclass(frozen=True)
class _Domain:
    name: str
    device_cum: tuple[float, ...]
    template_cum: tuple[float, ...]
    templates: tuple[_Template, ...]


def _compile_template(text: str, intent: str, rename: dict[str, str] | None = None) -> _Template:
    utt_parts: list[str] = []
    annot_parts: list[str] = []
    slot_types: list[str] = []
    catalogs: list[tuple[str, ...]] = []
    words: list[str | int] = []
    for raw in text.split():
        m = _PLACEHOLDER.fullmatch(raw)
        if m is None:
            if "{" in raw or "}" in raw or "[" in raw or "]" in raw:
                raise ValueError(f"template {text!r}: bad word {raw!r}")
            utt_parts.append(raw)
            annot_parts.append(raw)
            words.append(raw)
            continue
        slot_type, catalog = m.group(1), m.group(2) or m.group(1)
        if rename and slot_type in rename:
            slot_type = rename[slot_type]
        if catalog not in CATALOGS:
            raise ValueError(f"template {text!r}: no catalog {catalog!r}")
        k = len(slot_types)
        slot_types.append(slot_type)
        catalogs.append(CATALOGS[catalog])
        utt_parts.append(f"{{{k}}}")
        annot_parts.append(f"[{slot_type} : {{{k}}}]")
        words.append(k)
    return _Template(intent, " ".join(utt_parts), " ".join(annot_parts), tuple(slot_types), tuple(catalogs), tuple(words))


def _cumulative(weights: list[float]) -> tuple[float, ...]:
    total = sum(weights)
    cum, acc = [], 0.0
    for w in weights:
        acc += w / total
        cum.append(acc)
    # random() < 1.0, so a last bound of exactly 1.0 makes bisect never overrun.
    cum[-1] = 1.0
    return tuple(cum)


def _compile_domain(name: str, spec: dict) -> _Domain:
    entries: list[tuple[float, _Template]] = []
    rest = 1.0
    if spec["ambiguous"] is not None:
        share, intent, slot_type = spec["ambiguous"]
        rest -= share
        for text in _AMBIGUOUS_TEMPLATES:
            tpl = _compile_template(text.replace("{title}", "{title|titles}"), intent, {"title": slot_type})
            entries.append((share / len(_AMBIGUOUS_TEMPLATES), tpl))
    intent_total = sum(w for w, _ in spec["intents"].values())
    for intent, (weight, texts) in spec["intents"].items():
        if not intent.startswith(name.lower() + "_"):
            raise ValueError(f"intent {intent!r} is not qualified by its domain {name!r}")
        for text in texts:
            entries.append((rest * weight / intent_total / len(texts), _compile_template(text, intent)))
    return _Domain(
        name=name,
        device_cum=_cumulative(list(spec["devices"])),
        template_cum=_cumulative([w for w, _ in entries]),
        templates=tuple(t for _, t in entries),
    )


def _check_catalogs() -> None:
    for name, values in CATALOGS.items():
        for v in values:
            if not v or v != v.lower() or _BAD_VALUE.search(v):
                raise ValueError(f"catalog {name!r}: bad value {v!r}")


_check_catalogs()
_COMPILED: tuple[_Domain, ...] = tuple(_compile_domain(n, DOMAIN_SPECS[n]) for n in DOMAINS)
_DOMAIN_CUM: tuple[float, ...] = _cumulative([DOMAIN_SPECS[n]["weight"] for n in DOMAINS])

INTENTS: dict[str, tuple[str, ...]] = {n: tuple(DOMAIN_SPECS[n]["intents"]) for n in DOMAINS}
SLOT_TYPES: tuple[str, ...] = tuple(sorted({t for d in _COMPILED for tpl in d.templates for t in tpl.slot_types}))

# ---------------------------------------------------------------------------
# Generation.
# ---------------------------------------------------------------------------


def _validate(n_utterances, seed, dev_fraction, test_fraction) -> tuple[int, int, float, float]:
    if isinstance(n_utterances, bool):
        raise TypeError("n_utterances must be an integer, not a bool")
    try:
        n = operator.index(n_utterances)
    except TypeError:
        raise TypeError(f"n_utterances must be an integer, not {type(n_utterances).__name__}") from None
    if n < 1:
        raise ValueError(f"n_utterances must be >= 1, got {n}")
    if isinstance(seed, bool):
        raise TypeError("seed must be an integer, not a bool")
    try:
        s = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an integer, not {type(seed).__name__}") from None
    fractions = []
    for name, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}") from None
        if not (0.0 <= f < 1.0):  # also rejects NaN
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        fractions.append(f)
    if fractions[0] + fractions[1] >= 1.0:
        raise ValueError(
            f"dev_fraction + test_fraction must be < 1 (train needs a share), got {fractions[0]} + {fractions[1]}"
        )
    return n, s, fractions[0], fractions[1]


def _split_sizes(n: int, dev_fraction: float, test_fraction: float) -> tuple[int, int]:
    n_dev = math.floor(n * dev_fraction + 0.5)
    n_test = math.floor(n * test_fraction + 0.5)
    # Rounding up both may leave train empty on tiny corpora; train keeps one.
    while n_dev + n_test > n - 1 and n_dev + n_test > 0:
        if n_dev >= n_test:
            n_dev -= 1
        else:
            n_test -= 1
    return n_dev, n_test


def _render_noisy(tpl: _Template, values: list[str], rng: Random) -> tuple[str, str]:
    words = list(tpl.words)
    fillers = [i for i, w in enumerate(words) if isinstance(w, str) and w in _FILLER_SWAPS]
    if fillers:
        i = fillers[int(rng.random() * len(fillers))]
        if rng.random() < 0.5 and len(words) > 1:
            del words[i]
        else:
            swaps = _FILLER_SWAPS[words[i]]
            words[i] = swaps[int(rng.random() * len(swaps))]
    else:
        words.insert(0, _HESITATIONS[int(rng.random() * len(_HESITATIONS))])
    utt, annot = [], []
    for w in words:
        if isinstance(w, int):
            utt.append(values[w])
            annot.append(f"[{tpl.slot_types[w]} : {values[w]}]")
        else:
            utt.append(w)
            annot.append(w)
    return " ".join(utt), " ".join(annot)


def generator_source() -> bytes:
    """The generator's code and data: what the corpus is made from (prepare's cache key reads it)."""
    return Path(__file__).read_bytes() + _DATA_FILE.read_bytes()


def iter_records(
    n_utterances: int = 20000,
    seed: int = 0,
    dev_fraction: float = 0.15,
    test_fraction: float = 0.15,
    n_domains: int = len(DOMAINS),
) -> Iterator[dict]:
    """Stream ``n_utterances`` synthetic MASSIVE records; arguments are checked at the call.

    Exactly ``round(n * dev_fraction)`` records go to ``dev`` and
    ``round(n * test_fraction)`` to ``test`` (train keeps at least one), at
    random positions. The same seed gives the same records. ``n_domains``: the
    first ``n_domains`` hand-written domains, or all eight and generated skills
    (:mod:`rerank.corpus.skills`) up to ``n_domains``.
    """
    n, s, dev_fraction, test_fraction = _validate(n_utterances, seed, dev_fraction, test_fraction)
    if isinstance(n_domains, bool) or operator.index(n_domains) < 1:
        raise ValueError(f"n_domains must be a whole number >= 1, got {n_domains!r}")
    n_dev, n_test = _split_sizes(n, dev_fraction, test_fraction)
    return _records(n, s, n_dev, n_test, *_domain_tables(operator.index(n_domains), s))


def _domain_tables(n_domains: int, seed: int) -> tuple[tuple[_Domain, ...], tuple[float, ...]]:
    """The compiled domains and their cumulative traffic shares."""
    if n_domains == len(DOMAINS):
        return _COMPILED, _DOMAIN_CUM  # the default corpus, exactly as it always was
    if n_domains < len(DOMAINS):
        names = DOMAINS[:n_domains]
        return _COMPILED[:n_domains], _cumulative([DOMAIN_SPECS[d]["weight"] for d in names])
    from rerank.corpus.skills import skill_specs

    skills = skill_specs(n_domains - len(DOMAINS), seed)
    compiled = _COMPILED + tuple(_compile_domain(name, spec) for name, spec in skills.items())
    weights = [DOMAIN_SPECS[d]["weight"] for d in DOMAINS] + [spec["weight"] for spec in skills.values()]
    return compiled, _cumulative(weights)


def _records(n: int, seed: int, n_dev: int, n_test: int, domains: tuple[_Domain, ...] = _COMPILED,
             domain_cum: tuple[float, ...] = _DOMAIN_CUM) -> Iterator[dict]:
    rng = Random(seed)
    # A separate stream, so that the text does not depend on the split sizes.
    split_rng = Random(f"rerank.synthetic.partition:{seed}")
    rand, split_rand = rng.random, split_rng.random
    devices = DEVICES
    noise = NOISE_RATE
    dev_left, test_left = n_dev, n_test
    for i in range(n):
        dom = domains[bisect_right(domain_cum, rand())]
        device = devices[bisect_right(dom.device_cum, rand())]
        tpl = dom.templates[bisect_right(dom.template_cum, rand())]
        values = [cat[int(rand() * len(cat))] for cat in tpl.catalogs]
        if rand() < noise:
            utt, annot = _render_noisy(tpl, values, rng)
        else:
            utt = tpl.utt_fmt.format(*values)
            annot = tpl.annot_fmt.format(*values)
        # Selection sampling: exact split sizes, uniformly random positions.
        r = split_rand() * (n - i)
        if r < dev_left:
            partition = "dev"
            dev_left -= 1
        elif r < dev_left + test_left:
            partition = "test"
            test_left -= 1
        else:
            partition = "train"
        yield {
            "id": f"syn-{i:06d}",
            "locale": LOCALE,
            "partition": partition,
            "scenario": dom.name,
            "intent": tpl.intent,
            "utt": utt,
            "annot_utt": annot,
            "device": device,
        }


def generate(
    n_utterances: int = 20000,
    seed: int = 0,
    dev_fraction: float = 0.15,
    test_fraction: float = 0.15,
    n_domains: int = len(DOMAINS),
) -> list[dict]:
    """All records of :func:`iter_records` as a list (use the iterator for millions)."""
    return list(iter_records(n_utterances, seed, dev_fraction, test_fraction, n_domains))


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Write ``records`` one JSON object a line; readers never see a half-written file.

    The lines go to a temporary file in the destination's directory, which
    then replaces ``path`` in one ``os.replace``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            dumps = json.dumps
            for record in records:
                f.write(dumps(record, ensure_ascii=False))
                f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        # mkstemp's 0600 suits secrets, not a corpus other tools must read.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
