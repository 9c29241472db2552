"""Build the per-domain hypothesis tables: ``python scripts/prepare.py [data=hwu64 ...]``."""
import hydra
from omegaconf import DictConfig, OmegaConf

from rerank.hypotheses.prepare import prepare


@hydra.main(version_base="1.3", config_path="../configs", config_name="prepare")
def main(cfg: DictConfig) -> None:
    prepare(OmegaConf.to_container(cfg, resolve=True), force=cfg.force)


if __name__ == "__main__":
    main()
