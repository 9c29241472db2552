"""A real (small) cluster: two Ray nodes on this machine, prepare on Ray and a Hydra Ray-launcher sweep.

    python benchmarks/run.py bench=ray_cluster bench.output_dir=/tmp/cluster [bench.data=hwu64]

Run with the interpreter of an environment with the ``[ray]`` extra. It starts a head node
(``ray start --head``) and a second node (``ray start --address=...``), each with its own
temporary folder and one CPU; builds the tables with ``recognizers.backend=ray`` and checks
them against a local build; runs ``scripts/train.py -m domain=all hydra/launcher=ray`` on
the cluster, every job reading the tables from and publishing to ``output_dir`` (storage
that every node shares: here, one disk); reports the wall times, on which node each job
ran, and that every domain was published and gated; stops the cluster.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks.measure import REPO, machine, script
from benchmarks.prepare_speed import same_tables


def _ray(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "ray"), *args], check=True, capture_output=True, text=True)


def run(output_dir: str, hwu64: str, data: str = "hwu64", port: int = 6390) -> int:
    """The cluster run: two nodes, prepare locally and on Ray, the Ray-launcher sweep; prints the figures."""
    out = Path(output_dir).resolve()
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_DEDUP_LOGS="0")  # for this process and every command it starts
    address = f"127.0.0.1:{port}"
    _ray("stop", "--force")
    _ray("start", "--head", f"--port={port}", "--num-cpus=1", f"--temp-dir={out}/ray_head", "--include-dashboard=false",
         "--disable-usage-stats")
    _ray("start", f"--address={address}", "--num-cpus=1", f"--temp-dir={out}/ray_node2", "--disable-usage-stats")
    rows = []
    try:
        data_args = [f"data={data}"] + ([f"data.path={Path(hwu64).resolve()}"] if data == "hwu64" else [])
        for name, extra in (("local (2 processes)", ["recognizers.backend=local", f"paths.output_dir={out}/local"]),
                            ("Ray, 2 nodes", ["recognizers.backend=ray", f"recognizers.ray_address={address}",
                                              f"paths.output_dir={out}/shared"])):
            t = time.perf_counter()
            subprocess.run(script("prepare", *data_args, *extra, "force=true"), cwd=REPO, check=True, capture_output=True, text=True)
            rows.append((f"prepare, {name}", time.perf_counter() - t, ""))
        differ = same_tables(out / "local" / "data" / data, out / "shared" / "data" / data)
        t = time.perf_counter()
        sweep = subprocess.run([*script("train", "-m", *data_args[:1], "domain=all"),
                                f"paths.output_dir={out}/shared", "hydra/launcher=ray", f"+hydra.launcher.ray.init.address={address}",
                                "+hydra.launcher.ray.init.object_store_memory=null", "threads=1"],
                               cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if sweep.returncode != 0:
            raise RuntimeError(sweep.stdout[-2000:] + sweep.stderr[-3000:])
        text = sweep.stdout + sweep.stderr
        nodes = Counter(re.findall(r"timing .* node=([0-9a-f]+)", text))
        promoted = len(re.findall(r"promote \S+ \S+ -> v\d+: (?:accepted|refused)", text))
        rows.append(("training sweep, Hydra Ray launcher, 2 nodes (train, publish, gate)", wall,
                     f"jobs per node: {sorted(nodes.values())}; {promoted} gate verdicts"))
    finally:
        _ray("stop", "--force")
    print(f"# Ray cluster run, {time.strftime('%Y-%m-%d %H:%M %Z')}\n# machine: {machine()}\n")
    print("| step | wall s | notes |\n| --- | ---: | --- |")
    for name, secs, note in rows:
        print(f"| {name} | {secs:.1f} | {note} |")
    print(f"\ntables built on Ray identical to the local build: {not differ}" + (f" (differ: {differ})" if differ else ""))
    return 0
