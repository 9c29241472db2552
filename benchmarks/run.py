"""The benchmarks' one entry point: ``python benchmarks/run.py bench=<name> [override ...]``.

``bench`` is a config group, ``configs/bench/``, one option per benchmark (BENCHMARKS.md says which one
measured what):

- ``suite``: the quality suite (every re-ranker variant and its alternatives on one corpus, then the
  asynchronous update and speed figures; ``outputs/benchmarks/<corpus>/``); ``ablation``: the evidence
  ablation. Their settings are top-level keys, as a script's: ``data=hwu64 data.path=../shared/data/hwu64``,
  ``benchmark.bootstrap=200``, ``write_benchmarks_md=true``.
- the speed benchmarks: ``prepare``, ``train``, ``merge``, ``import``, ``serve``, ``scale``, ``release``,
  ``text``, ``ray_cluster``. Their settings are the option's keys: ``bench.<key>=value``.

Each option's ``_target_`` is the function in ``benchmarks/`` that runs it. A speed benchmark's is called
with the option's keys and returns the exit code; the suite's and the ablation's are ``_partial_: true``:
called with the whole composed config and the command line's overrides (which their results record).
``--cfg job`` prints the composed config and runs nothing.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# benchmarks/ is not an installed package: it is imported from the repository's root, as
# `benchmarks.<module>` (the configs' `_target_`s), never its modules as top-level names from this folder
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != HERE)]

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.utils import call  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402


def run(cfg: DictConfig, overrides: Sequence[str] = ()) -> int:
    """Run the benchmark that ``cfg.bench`` names; its exit code (0: done)."""
    done = call(cfg.bench)
    if cfg.bench.get("_partial_", False):  # the suite, the ablation: the whole config
        done(OmegaConf.to_container(cfg, resolve=True), cli_overrides=list(overrides))
        return 0
    return int(done or 0)


@hydra.main(config_path="../configs", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if code := run(cfg, HydraConfig.get().overrides.task):
        raise SystemExit(code)


if __name__ == "__main__":
    main()
