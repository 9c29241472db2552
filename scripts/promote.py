"""Gate a domain's version, then make it live: ``python scripts/promote.py data=hwu64 domain=music version=v4``.

The same command with an older version is a rollback; ``force=true`` overrides the gate.
Exits with 2 when the gate refuses (the live version stays).
"""
import sys

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="../configs", config_name="promote")
def main(cfg: DictConfig) -> None:
    from rerank.merge.promote import Refused, promote

    try:
        promote(OmegaConf.to_container(cfg, resolve=True))
    except Refused as err:
        print(f"promote: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
