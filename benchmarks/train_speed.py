"""Speed of training (BENCHMARKS.md, Training): ``python benchmarks/run.py bench=train``.

1. Throughput of one domain's linear re-ranker on data in memory, under Lightning, in
   hypotheses through the loss per second: Adam on mini-batches and full-batch L-BFGS, on a
   synthetic domain's table replicated to about ``rows`` rows.
2. Wall time of the whole HWU64 sweep (every domain, one loss) with Hydra's basic launcher
   (sequential), with joblib ``n_jobs=2`` and, given ``ray_python``, on a local Ray cluster.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from benchmarks.measure import machine, script, timed_sweep
from rerank.config import compose_config
from rerank.losses import PADDED_Y_VALUE


def throughput(out: Path, rows_target: int) -> list[tuple]:
    import lightning as L
    import torch

    from benchmarks.merge_speed import replicate
    from rerank.hypotheses.prepare import prepare
    from rerank.hypotheses.tables import open_tables
    from rerank.model.spec import spec_from_manifest
    from rerank.training.data import to_slates
    from rerank.training.datamodule import SlateDataModule
    from rerank.training.model import DomainReranker
    from rerank.training.module import RerankerModule

    cfg = compose_config("prepare", [f"paths.output_dir={out}"])
    manifest = prepare(cfg)
    tables = open_tables(cfg)
    spec = spec_from_manifest(manifest, "Music")
    table = tables.read("Music", "train")
    big = replicate({"Music": table}, int(table["utt_index"].to_numpy().max()) + 1, rows_target)[0]["Music"]
    slates = to_slates(big, spec)
    # One thread per job, as in a sweep; on 2 cores, threaded kernels on these small tensors only add contention.
    torch.set_num_threads(1)
    rows = []
    for name, optimizer, epochs in (("adam, 8192 utterances/batch", ["optimizer=adam", "optimizer.batch_size=8192"], 3),
                                    ("lbfgs, full batch", ["optimizer=lbfgs"], 2)):
        # the loss and optimizer nodes of configs/ (R3 at alpha 0.5, T 1)
        train_cfg = compose_config("train", ["domain=Music", "loss=combined", "loss.alpha=0.5", "loss.temperature=1.0", *optimizer])
        model = DomainReranker(spec)
        model.fit_standardisation(slates.x[slates.semer != PADDED_Y_VALUE])
        module = RerankerModule(model, train_cfg["loss"], train_cfg["optimizer"])
        dm = SlateDataModule(slates, slates, batch_size=train_cfg["optimizer"]["batch_size"])
        trainer = L.Trainer(max_epochs=epochs, limit_val_batches=0, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
        t = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        dt = time.perf_counter() - t
        rows.append((name, slates.n_hypotheses, module.rows_seen, dt, module.rows_seen / dt))
    return rows


def sweeps(out: Path, hwu64: str, ray_python: str | None = None) -> list[tuple]:
    data = ["data=hwu64", f"data.path={Path(hwu64).resolve()}"]
    subprocess.run(script("prepare", *data, f"paths.output_dir={out}"), check=True, stdout=subprocess.DEVNULL)
    launchers = [("sequential (basic launcher)", None, ["hydra/launcher=basic"]), ("joblib n_jobs=2", None, ["hydra.launcher.n_jobs=2"])]
    if ray_python:
        # Ray lives in its own environment (pip install -e '.[ray]'): a local Ray cluster on this machine.
        launchers.append(("ray (local cluster)", ray_python, ["hydra/launcher=ray"]))
    rows = []
    for name, python, launcher in launchers:
        sweep = timed_sweep(launcher, *data, f"paths.output_dir={out}", "~logger", python=python)
        if sweep["returncode"] != 0:
            raise RuntimeError(f"{sweep['command']} failed:\n{sweep['stderr_tail']}")
        rows.append((name, sweep["seconds"]))
    return rows


def run(output_dir: str, hwu64: str, rows: int = 1_000_000, sweep: bool = True, ray_python: str | None = None) -> int:
    out = Path(output_dir).resolve()
    print(f"machine: {machine()}; date: {time.strftime('%Y-%m-%d')}\n")
    print("| optimizer | hypotheses | hypotheses through the loss | fit s | hypotheses/s |\n| --- | ---: | ---: | ---: | ---: |")
    for name, n, seen, dt, rate in throughput(out, rows):
        print(f"| {name} | {n:,} | {seen:,} | {dt:.2f} | {rate / 1e6:.2f} M |")
    if sweep:
        print("\n| HWU64 sweep, 18 domains, loss=crossentropy | wall s |\n| --- | ---: |")
        for name, dt in sweeps(out, hwu64, ray_python):
            print(f"| {name} | {dt:.1f} |")
    return 0
