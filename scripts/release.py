"""Plan one release over every domain's pending candidate and apply it: ``python scripts/release.py data=hwu64``.

``release.dry_run=true`` plans and reports only; ``release.coadapt=true`` retrains the domains a
release harms against the world it creates; ``release.rollback=true`` undoes the newest release.
"""
import sys

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="../configs", config_name="release")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from rerank.merge.release import release
    from rerank.model.registry import RegistryError

    try:
        release(OmegaConf.to_container(cfg, resolve=True), overrides=list(HydraConfig.get().overrides.task))
    except RegistryError as err:
        print(f"release: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
