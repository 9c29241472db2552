"""Train one domain's re-ranker: ``python scripts/train.py domain=Music loss=combined``.

``python scripts/train.py -m domain=all`` trains every domain of the corpus in
parallel (Hydra's joblib launcher; ``hydra.launcher.n_jobs`` sets the width).
"""
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from rerank.training.cli import expand_all_domains, in_multirun, parallel_jobs

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    from rerank.training.module import DEV_METRICS
    from rerank.training.train import train

    container = OmegaConf.to_container(cfg, resolve=True)
    metric = container["optimized_metric"]
    if metric not in DEV_METRICS:
        raise SystemExit(f"optimized_metric must be one of {', '.join(DEV_METRICS)}, not {metric!r}")
    if container.get("parallel_jobs") is None:
        container["parallel_jobs"] = parallel_jobs()
    result = train(container)
    # in a sweep, promote=gate only publishes: one release plan follows when the sweep ends (rerank.merge.sweep_release)
    gate_now = container.get("promote", "gate") == "force" or (container.get("promote", "gate") == "gate" and not in_multirun())
    if "version" in result and gate_now:
        import time

        from rerank.merge.promote import promote_trained

        t = time.perf_counter()
        promote_trained(container, result)
        result["timing"]["gate"] = round(time.perf_counter() - t, 4)
    where = ""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():  # a job of the Ray launcher: on which node
        where = f" node={sys.modules['ray'].get_runtime_context().get_node_id()[:12]}"
    print("timing " + " ".join(f"{k}={v}" for k, v in result["timing"].items()) + where, flush=True)
    return result["dev"].get(metric, float("nan"))  # the dev figure a sweeper minimises (optimized_metric)


if __name__ == "__main__":
    sys.argv = expand_all_domains(sys.argv, CONFIGS)
    main()
    # Every job has published and logged: stop the idle worker pool now (shutting it down
    # gracefully at exit takes 1-2 s of processes that hold torch).
    from joblib.externals.loky import reusable_executor

    if getattr(reusable_executor, "_executor", None) is not None:
        reusable_executor._executor.shutdown(wait=True, kill_workers=True)
