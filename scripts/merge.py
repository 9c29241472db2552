"""Rank every domain's hypotheses together from the published re-rankers: ``python scripts/merge.py``."""
import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="../configs", config_name="merge")
def main(cfg: DictConfig) -> None:
    from rerank.merge.run import merge

    merge(OmegaConf.to_container(cfg, resolve=True))


if __name__ == "__main__":
    main()
