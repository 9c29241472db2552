"""The ranking service as a Ray Serve deployment: ``python -m rerank.serving.ray_serve data=hwu64 replicas=2``.

The same FastAPI app (:func:`rerank.serving.app.create_app`), built on every replica
by a builder function, so each replica loads the live models and follows the
registry's live pointers on its own. Run on a Ray cluster (``ray start --head``
first, ``ray_address=auto``) or on a local Ray instance (the default). Needs
``pip install -e '.[serve-ray]'``.
"""
from __future__ import annotations

import sys
import time

import orjson


def build_app(cfg_json: bytes):
    from rerank.serving.app import create_app, settings_from_config

    return create_app(settings_from_config(orjson.loads(cfg_json)))


def deploy(cfg: dict, replicas: int = 2, port: int = 8000, ray_address: str | None = None, name: str = "rerank"):
    """Start Ray Serve (HTTP on 127.0.0.1:``port``) and the deployment; returns the application handle."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg_json = orjson.dumps(cfg)

    def builder():  # a plain function (Ray takes a partial for an ASGI app); cloudpickle carries cfg_json
        return build_app(cfg_json)

    ingress = serve.ingress(builder)
    deployment = serve.deployment(name=name, num_replicas=replicas)(ingress(type("RankService", (), {})))
    return serve.run(deployment.bind(), name=name, route_prefix="/")


def main(argv: list[str]) -> None:
    from rerank.config import compose_config

    keys = {"replicas": 2, "port": 8000, "ray_address": None}
    overrides = []
    for a in argv:
        k, _, v = a.partition("=")
        if k in keys:
            keys[k] = int(v) if k in ("replicas", "port") else v
        else:
            overrides.append(a)
    cfg = compose_config("serve", overrides)
    deploy(cfg, keys["replicas"], keys["port"], keys["ray_address"])
    print(f"serve (Ray Serve): {cfg['data']['name']} on http://127.0.0.1:{keys['port']} with {keys['replicas']} replicas; "
          "Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
