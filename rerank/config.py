"""A config of ``configs/`` composed outside a Hydra app (a script's helper, a benchmark, a test, Ray Serve)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_config(name: str, overrides: Sequence[str] = (), config_dir: str | Path = CONFIGS) -> dict:
    """``<config_dir>/<name>.yaml`` composed with ``overrides``, resolved, as a plain dict.

    Inside a running Hydra app (its global state already set) the app's config search path is used.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    if GlobalHydra.instance().is_initialized():
        cfg = compose(config_name=name, overrides=list(overrides))
    else:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            cfg = compose(config_name=name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)
