"""The ranking service: ``python scripts/serve.py data=hwu64 port=8080`` (FastAPI on uvicorn).

``workers=2`` runs two uvicorn worker processes; each follows the registry's live
pointers on its own, and /metrics adds up every worker's counters.
"""
import os
import tempfile

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="../configs", config_name="serve")
def main(cfg: DictConfig) -> None:
    import orjson
    import uvicorn

    c = OmegaConf.to_container(cfg, resolve=True)
    workers = int(c["workers"])
    os.environ["RERANK_SERVE_CONFIG"] = orjson.dumps(c).decode()
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="rerank_metrics_")
    print(f"serve: {c['data']['name']} on http://{c['host']}:{c['port']} ({workers} worker{'s' if workers > 1 else ''})",
          flush=True)
    try:  # (uvicorn's httptools protocol, an answer's writes in one system call: rerank/serving/http.py)
        from rerank.serving.http import GatheredWritesProtocol as http
    except ImportError:  # no httptools: uvicorn's own choice
        http = "auto"
    uvicorn.run("rerank.serving.app:app_from_env", factory=True, host=c["host"], port=int(c["port"]), workers=workers,
                log_level=c["serve"]["log_level"], access_log=False, http=http,
                # (the service reads no client address: X-Forwarded-* headers need no middleware on every request)
                proxy_headers=False)


if __name__ == "__main__":
    main()
