"""Train one domain's re-ranker: ``python scripts/train.py domain=Music loss=combined``.

``python scripts/train.py -m domain=all`` trains every domain of the corpus in
parallel (Hydra's joblib launcher; ``hydra.launcher.n_jobs`` sets the width).
"""
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from rerank.training.cli import expand_all_domains, parallel_jobs

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    from rerank.training.train import train

    container = OmegaConf.to_container(cfg, resolve=True)
    if container.get("parallel_jobs") is None:
        container["parallel_jobs"] = parallel_jobs()
    result = train(container)
    if "version" in result and container.get("promote", "gate") != "none":
        from rerank.merge.promote import promote_trained

        promote_trained(container, result)
    return result["dev"].get("semer", float("nan"))


if __name__ == "__main__":
    sys.argv = expand_all_domains(sys.argv, CONFIGS)
    main()
