"""The floor of the ranking service: the least a FastAPI + orjson app on uvicorn can do with the same request.

It parses the same ``/rank`` body, scores every hypothesis by the baseline ``dc*ic*ner``, sorts and
answers every hypothesis with every field it came with (plus ``score`` and ``rank``): no checks, no
models, no snapshot. ``bench=serve`` runs it side by side with ``scripts/serve.py`` (same bodies, same
client, one run) and reports the service's requests/s as a share of the floor's.

    python -m benchmarks.serve_floor PORT
"""
import sys

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()


@app.post("/rank")
async def rank(request: Request) -> Response:
    body = orjson.loads(await request.body())
    hyps = body["hypotheses"]
    for h in hyps:
        h["score"] = h["dc"] * h["ic"] * h["ner"]
    hyps.sort(key=lambda h: -h["score"])
    for r, h in enumerate(hyps):
        h["domain_rank"], h["rank"] = h.get("rank"), r
    return Response(orjson.dumps({"utt_id": body.get("utt_id"), "hypotheses": hyps}), media_type="application/json")


@app.get("/health")
async def health() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


if __name__ == "__main__":  # served as scripts/serve.py serves: uvicorn's defaults (uvloop, httptools), no access log
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
