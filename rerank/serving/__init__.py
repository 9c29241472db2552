"""Serving: the live snapshot of every domain's re-ranker behind an HTTP service (FastAPI on uvicorn)."""
