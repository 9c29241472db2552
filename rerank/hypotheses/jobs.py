"""Running the jobs of a build: in this process, on local loky worker processes, or on Ray.

A job is ``fn(ctx, *args)``: ``ctx`` is what every job reads (for prepare, the
corpus and the recognizer family), built once in the parent and loaded once per
worker process (or once per Ray worker, from the object store), never pickled
per job. Every job runs with BLAS/OpenMP limited to one thread, so that
``n_jobs`` processes use ``n_jobs`` cores and results do not depend on their number.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from typing import Any, Callable, Mapping

__all__ = ["BACKENDS", "JobRunner", "one_thread", "worker_count"]

BACKENDS = ("local", "ray")


def one_thread():
    """A context in which BLAS/OpenMP run on one thread (a job's share of the machine is one core)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def worker_count(rec_cfg: Mapping[str, Any]) -> int:
    """The number of local worker processes ``rec_cfg["n_jobs"]`` asks for (at least 1)."""
    n = rec_cfg.get("n_jobs", 1)
    n = 1 if n is None else int(n)
    if n < 0:  # joblib's convention: -1 is every core
        n = max(1, (os.cpu_count() or 1) + 1 + n)
    return max(1, n)


_WORKER_CTX: Any = None


def _init_worker(ctx_path: str) -> None:
    global _WORKER_CTX
    with open(ctx_path, "rb") as fh:
        _WORKER_CTX = pickle.load(fh)


def _in_worker(fn: Callable, *args):
    return fn(_WORKER_CTX, *args)


_RAY_CTX: dict = {}


def _ray_job(ctx_ref: list, fn: Callable, *args):
    # The reference comes wrapped in a list, so that Ray does not unpickle the context for every
    # task: a worker fetches it once and keeps it.
    import ray

    key = ctx_ref[0].hex()
    if key not in _RAY_CTX:
        _RAY_CTX.clear()
        _RAY_CTX[key] = ray.get(ctx_ref[0])
    with one_thread():
        return fn(_RAY_CTX[key], *args)


class JobRunner:
    """Runs jobs ``fn(ctx, *args)`` in this process, on ``n_jobs`` loky worker processes, or on Ray.

    ``backend="ray"``: the jobs are Ray tasks on the cluster ``ray_address`` names (``auto``: the
    one this machine belongs to; ``null``: a local instance); the context goes to Ray's object
    store once and every node reads it from there.
    """

    def __init__(self, ctx: Any, n_jobs: int, backend: str = "local", ray_address: str | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"recognizers.backend must be one of {BACKENDS}, not {backend!r}")
        self.ctx, self.n_jobs, self.backend, self.ray_address = ctx, n_jobs, backend, ray_address
        self._pool, self._tmp, self._ray = None, None, None

    def __enter__(self) -> "JobRunner":
        if self.backend == "ray":
            try:
                import ray
            except ImportError:
                raise ImportError("recognizers.backend=ray needs Ray: pip install -e '.[ray]'") from None
            if not ray.is_initialized():
                ray.init(address=self.ray_address, include_dashboard=False, log_to_driver=False)
            self._ray = (ray, ray.put(self.ctx), ray.remote(_ray_job))
        elif self.n_jobs > 1:
            from joblib.externals.loky import ProcessPoolExecutor

            self._tmp = tempfile.TemporaryDirectory(prefix="rerank_prepare_")
            path = os.path.join(self._tmp.name, "context.pkl")
            with open(path, "wb") as fh:
                pickle.dump(self.ctx, fh, protocol=pickle.HIGHEST_PROTOCOL)
            one_thread_env = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
            self._pool = ProcessPoolExecutor(max_workers=self.n_jobs, initializer=_init_worker, initargs=(path,),
                                             env=one_thread_env)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._pool is not None:
            # a job failed (or Ctrl-C): do not wait for the others
            self._pool.shutdown(wait=exc_type is None, kill_workers=exc_type is not None)
        if self._tmp is not None:
            self._tmp.cleanup()

    def map(self, fn: Callable, jobs: list[tuple], bar, take: Callable[[tuple, Any], None]) -> None:
        """``fn(ctx, *job)`` for every job (a tuple of arguments), each result handed to ``take(job[:2], result)``
        as it completes (nothing is kept here: a thousand domains' tables need not be in memory at once)."""
        done_with = take
        if self._ray is not None:
            ray, ctx_ref, remote = self._ray
            pending = {remote.remote([ctx_ref], fn, *job): job[:2] for job in jobs}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=min(len(pending), 64), timeout=1.0)
                for ref in done:
                    done_with(pending.pop(ref), ray.get(ref))
                bar.update(len(done))
        elif self._pool is None:
            for job in jobs:
                done_with(job[:2], fn(self.ctx, *job))
                bar.update()
        else:
            from joblib.externals.loky import as_completed

            futures = {self._pool.submit(_in_worker, fn, *job): job[:2] for job in jobs}
            for fut in as_completed(futures):
                done_with(futures[fut], fut.result())
                bar.update()
