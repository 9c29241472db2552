"""A table set to the files ``import`` reads: ``python scripts/export_nbest.py data=hwu64 out=/tmp/hwu64_nbest``."""
import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    from rerank.hypotheses.export import export_nbest
    from rerank.hypotheses.tables import open_tables

    container = OmegaConf.to_container(cfg, resolve=True)
    paths = export_nbest(open_tables(container), container["out"])
    print(f"export: wrote {paths['nbest']} and {paths['gold']}")


if __name__ == "__main__":
    main()
