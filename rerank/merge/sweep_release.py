"""A Hydra callback of ``scripts/train.py``: a sweep publishes, then one release plan when it ends.

Per-job gates racing each other made what went live depend on which job finished
first; with ``promote=gate`` in a multirun, each job only publishes (``train.py`` skips
its gate there) and this callback plans one release over every domain's pending
candidate when the sweep is over (co-adapting with ``release.coadapt=true``).
"""
from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def releases_after_sweep(cfg) -> bool:
    """Whether a sweep of ``scripts/train.py`` with this config ends with a release plan."""
    trainer = cfg.get("trainer") or {}
    return cfg.get("promote", "gate") == "gate" and bool(cfg.get("publish", True)) and not trainer.get("fast_dev_run")


class ReleaseAfterSweep(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # (the sweep's own config: "domain" is each job's, missing here; "hydra" is Hydra's)
        cfg = {k: OmegaConf.to_container(config[k], resolve=True) if OmegaConf.is_config(config[k]) else config[k]
               for k in config if k != "hydra" and not OmegaConf.is_missing(config, k)}
        if not releases_after_sweep(cfg):
            return
        from rerank.merge.release import release

        overrides = list(config.hydra.overrides.task)
        print("\n=== the sweep is over: one release plan over every domain's pending candidate", flush=True)
        release(cfg, overrides=overrides)
