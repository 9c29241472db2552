"""The speed benchmarks: ``python scripts/bench.py bench=<name> [bench.<option>=value ...]``.

``bench`` is a config group (``configs/bench/``): prepare, train, merge, import, serve, scale,
ray_cluster. Each option's ``_target_`` is the function that runs it; it prints markdown
tables with the machine and the date (BENCHMARKS.md).
"""
import hydra
from hydra.utils import call
from omegaconf import DictConfig


@hydra.main(config_path="../configs", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    code = call(cfg.bench)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
