"""Benchmark of per-domain training (BENCHMARKS.md, section Training).

    python scripts/bench_train.py [--output-dir outputs/bench_train] [--hwu64 ../shared/data/hwu64] [--ray-python PY]

1. Throughput of one domain's linear re-ranker on data in memory, under
   Lightning, in hypotheses through the loss per second: Adam on mini-batches
   and full-batch L-BFGS, on a synthetic domain's table replicated to ~1M rows.
2. Wall time of the whole HWU64 sweep (every domain, one loss) with Hydra's
   basic launcher (sequential) and with joblib n_jobs=2.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}"


def compose(name: str, overrides: list[str]) -> dict:
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return OmegaConf.to_container(hcompose(config_name=name, overrides=overrides), resolve=True)


def throughput(out: Path, rows_target: int) -> list[tuple]:
    import lightning as L
    import pyarrow as pa
    import torch

    from rerank.hypotheses.prepare import prepare
    from rerank.hypotheses.tables import open_tables
    from rerank.model.features import spec_from_manifest
    from rerank.training.data import to_slates
    from rerank.training.datamodule import SlateDataModule
    from rerank.training.model import DomainReranker
    from rerank.training.module import RerankerModule

    cfg = compose("prepare", [f"paths.output_dir={out}"])
    manifest = prepare(cfg)
    tables = open_tables(cfg)
    spec = spec_from_manifest(manifest, "Music")
    table = tables.read("Music", "train")
    reps = max(1, rows_target // table.num_rows)
    big = pa.concat_tables([table.set_column(table.schema.get_field_index("utt_index"), "utt_index",
                                             pa.array(table["utt_index"].to_numpy() + i * (table["utt_index"].to_numpy().max() + 1), pa.int32()))
                            for i in range(reps)])
    slates = to_slates(big, spec)
    # One thread per job, as in a sweep; on 2 cores, threaded kernels on these small tensors only add contention.
    torch.set_num_threads(1)
    rows = []
    for name, optimizer, epochs in (("adam, 8192 utterances/batch", ["optimizer=adam", "optimizer.batch_size=8192"], 3),
                                    ("lbfgs, full batch", ["optimizer=lbfgs"], 2)):
        # the loss and optimizer nodes of configs/ (R3 at alpha 0.5, T 1)
        train_cfg = compose("train", ["domain=Music", "loss=combined", "loss.alpha=0.5", "loss.temperature=1.0", *optimizer])
        model = DomainReranker(spec)
        model.fit_standardisation(slates.x[slates.semer != -1])
        module = RerankerModule(model, train_cfg["loss"], train_cfg["optimizer"])
        dm = SlateDataModule(slates, slates, batch_size=train_cfg["optimizer"]["batch_size"])
        trainer = L.Trainer(max_epochs=epochs, limit_val_batches=0, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
        t = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        dt = time.perf_counter() - t
        rows.append((name, slates.n_hypotheses, module.rows_seen, dt, module.rows_seen / dt))
    return rows


def sweep(out: Path, hwu64: str, ray_python: str | None = None) -> list[tuple]:
    subprocess.run([sys.executable, str(ROOT / "scripts/prepare.py"), "data=hwu64", f"data.path={hwu64}", f"paths.output_dir={out}"],
                   check=True, stdout=subprocess.DEVNULL)
    rows = []
    launchers = [("sequential (basic launcher)", sys.executable, ["hydra/launcher=basic"]),
                 ("joblib n_jobs=2", sys.executable, ["hydra.launcher.n_jobs=2"])]
    if ray_python:
        # Ray lives in its own environment (pip install -e '.[ray]'): a local Ray cluster on this machine.
        launchers.append(("ray (local cluster)", ray_python, ["hydra/launcher=ray"]))
    for name, python, launcher in launchers:
        cmd = [python, str(ROOT / "scripts/train.py"), "-m", "data=hwu64", f"data.path={hwu64}", "domain=all",
               "loss=crossentropy", f"paths.output_dir={out}", "~logger", *launcher]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows.append((name, time.perf_counter() - t))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--output-dir", default=str(ROOT / "outputs/bench_train"))
    ap.add_argument("--hwu64", default=str(ROOT.parent / "shared/data/hwu64"))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--ray-python", help="a Python with the [ray] extra installed, to time the sweep on a local Ray cluster too")
    args = ap.parse_args()
    out = Path(args.output_dir)
    print(f"machine: {machine()}; date: {time.strftime('%Y-%m-%d')}\n")
    print("| optimizer | hypotheses | hypotheses through the loss | fit s | hypotheses/s |\n| --- | ---: | ---: | ---: | ---: |")
    for name, n, seen, dt, rate in throughput(out, args.rows):
        print(f"| {name} | {n:,} | {seen:,} | {dt:.2f} | {rate / 1e6:.2f} M |")
    if not args.skip_sweep:
        print("\n| HWU64 sweep, 18 domains, loss=crossentropy | wall s |\n| --- | ---: |")
        for name, dt in sweep(out, args.hwu64, args.ray_python):
            print(f"| {name} | {dt:.1f} |")


if __name__ == "__main__":
    main()
