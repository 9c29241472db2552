"""The registry's versions and their stages: ``python scripts/registry.py data=hwu64 [domain=music] [show=history]``."""
import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="../configs", config_name="registry")
def main(cfg: DictConfig) -> None:
    from rerank.model.listing import render_history, render_versions
    from rerank.model.registry import Registry

    c = OmegaConf.to_container(cfg, resolve=True)
    registry = Registry(c["paths"]["registry_dir"])
    corpus = c["data"]["name"]
    if c["show"] == "history":
        print(render_history(registry, corpus, c.get("domain")))
    else:
        print(render_versions(registry, corpus, c.get("domain")))


if __name__ == "__main__":
    main()
