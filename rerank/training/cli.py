"""Command-line helpers of ``scripts/train.py``: ``domain=all`` and the parallel width."""
from __future__ import annotations

import os
from pathlib import Path

# Only these groups decide which hypothesis tables (and so which domains) a run sees.
TABLE_KEYS = ("data", "paths")
ALL = ("all", "*", "glob(*)")


def expand_all_domains(argv: list[str], config_dir: str | Path) -> list[str]:
    """Replace ``domain=all`` by ``domain=<every domain of the tables>`` and make the run a multirun.

    The domains are read from the manifest of the hypothesis tables the
    command line names; the tables are never built here (``scripts/prepare.py``
    or ``scripts/import.py`` do that, once, before).
    """
    hits = [i for i, a in enumerate(argv) if a.split("=", 1)[0] == "domain" and a.split("=", 1)[-1].strip("'\"") in ALL]
    if not hits:
        return argv
    from rerank.config import compose_config
    from rerank.hypotheses.tables import TablesMissing, open_tables

    overrides = []
    for a in argv[1:]:
        key = a.lstrip("+~").split("=", 1)[0]
        if "=" in a and key.split(".")[0].split("/")[0] in TABLE_KEYS:
            if "," in a.split("=", 1)[1]:
                raise SystemExit(f"domain=all cannot be combined with a sweep over {key}: run one corpus at a time")
            overrides.append(a)
    cfg = compose_config("train", [*overrides, "domain=_all_"], config_dir)
    try:
        tables = open_tables(cfg)
    except TablesMissing as err:
        raise SystemExit(f"domain=all: {err}") from None
    out = list(argv)
    for i in hits:
        out[i] = "domain=" + ",".join(tables.domains)

    if not any(a in ("-m", "--multirun") for a in out):
        out.insert(1, "--multirun")
    return out


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ValueError, AttributeError):
        return False


def parallel_jobs() -> int:
    """How many jobs of this sweep run at once (1 outside a Hydra multirun)."""
    if not in_multirun():
        return 1
    from hydra.core.hydra_config import HydraConfig

    try:
        n = int(HydraConfig.get().launcher.get("n_jobs") or 1)
    except (AttributeError, TypeError):
        return 1
    # joblib: -1 is every core, -2 all but one, ...
    return max(1, (os.cpu_count() or 1) + 1 + n) if n < 0 else n
