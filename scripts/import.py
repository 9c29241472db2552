"""Import your own recognizers' n-best: ``python scripts/import.py name=acme nbest=acme_nbest.jsonl gold=acme_gold.jsonl``."""
import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="../configs", config_name="import")
def main(cfg: DictConfig) -> None:
    from rerank.hypotheses.nbest_import import import_nbest

    import_nbest(OmegaConf.to_container(cfg, resolve=True))


if __name__ == "__main__":
    main()
