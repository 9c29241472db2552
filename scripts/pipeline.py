"""The main job: prepare, train every domain in parallel, release (with co-adaptation), merge, print the report.

    python scripts/pipeline.py [data=hwu64 data.path=...] [paths.output_dir=...]

Extra arguments are Hydra overrides passed to every step. Each step is the
ordinary script, so any step can be rerun on its own.
"""
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent


def run(step: str, *args: str) -> None:
    cmd = [sys.executable, str(SCRIPTS / f"{step}.py"), *args]
    print(f"\n=== {' '.join(cmd[1:])}", flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"=== {step} done in {time.perf_counter() - t:.1f} s", flush=True)


def main(argv: list[str]) -> None:
    overrides = [a for a in argv if "=" in a]
    run("prepare", *overrides)
    # The defaults are what the benchmark chose on dev (BENCHMARKS.md). The sweep publishes every domain's
    # version, then plans one release over all of them on the joint world (rerank.merge.release); the
    # domains it harms retrain against that world (co-adaptation) and the plan is made again with them.
    run("train", "-m", "domain=all", "release.coadapt=true", *overrides)
    run("merge", *overrides)


if __name__ == "__main__":
    main(sys.argv[1:])
