"""The main job: prepare, train every domain in parallel, release (with co-adaptation), merge, print the report.

    python scripts/pipeline.py [data=hwu64 data.path=...] [recognizers=neural] [paths.output_dir=...]

Extra arguments are Hydra overrides. Each goes to the steps whose config has its key
(``recognizers=neural`` to prepare only, ``loss=semer`` to training only, ``data=...`` to
all); an override that no step knows fails at once, naming it. Each step is the ordinary
script, so any step can be rerun on its own.
"""
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
STEPS = ("prepare", "train", "merge")


def run(step: str, *args: str) -> None:
    cmd = [sys.executable, str(SCRIPTS / f"{step}.py"), *args]
    print(f"\n=== {' '.join(cmd[1:])}", flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"=== {step} done in {time.perf_counter() - t:.1f} s", flush=True)


def route(overrides: list[str]) -> dict[str, list[str]]:
    """Each override, for the steps whose composed config has its top-level key (or group)."""
    from rerank.config import compose_config

    keys = {step: set(compose_config(step, ["domain=_any_"] if step == "train" else [])) for step in STEPS}
    out: dict[str, list[str]] = {step: [] for step in STEPS}
    unknown = []
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0].split(".")[0].split("/")[0]
        takers = [step for step in STEPS if key in keys[step] or key == "hydra"]
        if not takers:
            unknown.append(o)
        for step in takers:
            out[step].append(o)
    if unknown:
        raise SystemExit(f"pipeline: no step knows {unknown} (prepare: {sorted(keys['prepare'])}; "
                         f"train: {sorted(keys['train'])}; merge: {sorted(keys['merge'])})")
    return out


def main(argv: list[str]) -> None:
    routed = route([a for a in argv if "=" in a])
    run("prepare", *routed["prepare"])
    # The defaults are what the benchmark chose on dev (BENCHMARKS.md). The sweep publishes every domain's
    # version, then plans one release over all of them on the joint world (rerank.merge.release); the
    # domains it harms retrain against that world (co-adaptation) and the plan is made again with them.
    run("train", "-m", "domain=all", "release.coadapt=true", *routed["train"])
    run("merge", *routed["merge"])


if __name__ == "__main__":
    main(sys.argv[1:])
