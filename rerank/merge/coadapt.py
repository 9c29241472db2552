"""Co-adaptation: the domains a release harms retrain against the world it would create.

When a candidate takes other domains' utterances, the harmed domains' re-rankers were
fitted against competitors that are about to change. Each harmed domain is retrained
with the whole cross-domain list of each utterance (``slates=utterance_live``), its
competitors scored by the versions of the named world (``slates.world``), and published
as a candidate. The config it publishes records that world, so the planner bundles the
retrained version with the versions it was trained beside.

The retrains are one ``scripts/train.py -m`` sweep: a ``train()`` job per domain, in
parallel, on whatever Hydra launcher the forwarded overrides configure.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

from rerank.config import CONFIGS
from rerank.io import write_json
from rerank.model.registry import Registry

TRAIN_SCRIPT = CONFIGS.parent / "scripts" / "train.py"
#: the settings of a retrain that the planner decides; an override of these from the user is not forwarded
OWNED = ("domain", "promote", "publish", "slates", "hydra.sweep", "hydra.run")


class CoadaptError(RuntimeError):
    pass


def forwardable(overrides: Sequence[str]) -> list[str]:
    """The overrides of the command that started the release that a retrain should share (data, paths, model, ...)."""
    out = []
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if not any(key == k or key.startswith(k + ".") or key.startswith(k + "/") for k in OWNED):
            out.append(o)
    return out


def retrain(registry: Registry, corpus: str, worlds: Mapping[str, Mapping[str, str]], overrides: Sequence[str],
            folder: Path, log=print) -> dict[str, str]:
    """Retrain every domain of ``worlds`` against its world ({domain: {other: version}}); returns the new versions."""
    if not worlds:
        return {}
    if not TRAIN_SCRIPT.is_file():
        raise CoadaptError(f"co-adaptation runs {TRAIN_SCRIPT}, which this install does not have (install the project "
                           "from its checkout, or set release.coadapt=false)")
    before = {d: registry.versions(corpus, d) for d in worlds}
    path = Path(folder) / f"coadapt-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}.json"
    write_json(path, {d: dict(w) for d, w in worlds.items()})
    cmd = [sys.executable, str(TRAIN_SCRIPT), "-m", "domain=" + ",".join(sorted(worlds)), "slates=utterance_live",
           f"slates.world={path}", "promote=none", *forwardable(overrides)]
    log(f"co-adaptation: retraining {', '.join(sorted(worlds))} against the world of the release: {' '.join(cmd[1:])}")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise CoadaptError(f"co-adaptation: the retrain sweep failed (exit {done.returncode}):\n{tail}")
    new = {}
    for d in worlds:
        added = [v for v in registry.versions(corpus, d) if v not in before[d]]
        if added:
            new[d] = added[-1]
    return new
