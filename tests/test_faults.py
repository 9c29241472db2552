"""Fault injection (issue 19 item 3), bounded in time: kill -9 at random points during publish, release, import and
prepare; a full disk (ENOSPC) during publish and import; unreadable registry files while the service runs under load.

Every trial is checked: afterwards there is no mixed or half-visible artefact (a version folder is complete and loads,
a live state is exactly the old or the new release, a table set is absent or exactly the old or the new one), the next
operation cleans what the killed one left, and while the service runs no request fails, the old model serves until the
whole new release can, and ``/health`` tells the truth.

A killed operation runs in a child forked from this process (its imports are warm, so a trial costs the operation and
no interpreter start); the child is killed with SIGKILL after a random delay within the operation's duration, measured
here first. While it runs, this process reads what the operation writes, as a reader in production would.
"""
from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import httpx
import numpy as np
import pytest

import rerank.model.registry as registry_mod
from conftest import compose_config, prepare_config
from rerank.hypotheses.export import export_nbest
from rerank.hypotheses.nbest_import import import_nbest
from rerank.hypotheses.prepare import prepare
from rerank.hypotheses.tables import TablesCorrupt, TableSet, TableSetWriter, TablesMissing
from rerank.merge.release import rollback
from rerank.model.registry import Registry
from test_registry import CORPUS, DOMAIN, FILES, make_model, publish, staging_dirs
from test_release import _toy_registry

#: kill -9 trials per operation that must land while the operation runs (a child that finished first does not count)
KILLS = 20
#: at most this many trials per operation to get them
MAX_TRIALS = 50
#: between two reads of the reader that runs beside a killed operation (it must not starve it of the 2 cores)
READER_PAUSE = 0.005


def quiet(*_):
    pass


# ----------------------------------------------------------------------------- the killer


def _in_child() -> None:
    """What a forked child must not share with this process: tqdm's lock is a multiprocessing semaphore, inherited
    across fork, and a child killed while holding it (a progress bar drawing) would leave every later bar here
    waiting for ever (a separate process of the real commands has its own)."""
    import tqdm
    import tqdm.auto

    for cls in {tqdm.tqdm, tqdm.auto.tqdm}:
        cls.set_lock(threading.RLock())


def _fork(op: Callable[[], object], prepare: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Fork a child that runs ``op`` (after ``prepare(write_end)``) and writes ``g`` to the pipe as it starts;
    returns its PID and the pipe's read end. The child has no pytest machinery and no atexit: it exits 0 only
    when ``op`` returned."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            _in_child()
            if prepare is not None:
                prepare(w)
            os.write(w, b"g")
            op()
            code = 0
        except BaseException:  # noqa: BLE001 (reported through the exit code)
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def fork_and_kill(op: Callable[[], object], delay: float, reader: Callable[[], None] | None = None) -> bool:
    """Run ``op`` in a forked child; SIGKILL it ``delay`` seconds after it starts, calling ``reader`` meanwhile.

    Returns True when the kill landed while ``op`` ran, False when the child had finished (it must have succeeded).
    """
    pid, r = _fork(op)
    try:
        assert os.read(r, 1) == b"g"
    finally:
        os.close(r)
    start = time.monotonic()
    deadline = start + delay
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            return True  # (a child that kills itself at a chosen point)
        if done:  # finished before the kill: it must have succeeded
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "the operation failed in the child on its own"
            FINISHED.append(time.monotonic() - start)
            return False
        if reader is not None:
            reader()
        time.sleep(max(0.0, min(READER_PAUSE, deadline - time.monotonic())))
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the operation failed in the child on its own (see the captured stderr)"
    FINISHED.append(time.monotonic() - start)
    return False


#: how long the children that finished before their kill took (the kill delays shrink to it)
FINISHED: list[float] = []


def kill_delays(rng: random.Random, seconds: float, writing_from: float = 0.0):
    """Random kill delays within ``seconds``: every other one within the writing phase (from ``writing_from``).

    A child that finished before its kill shows the operation is quicker now (a busy machine is not always busy):
    the window shrinks to what it took, keeping the writing phase in proportion."""
    i, seen = 0, len(FINISHED)
    while True:
        if len(FINISHED) > seen:
            took, seen = min(FINISHED[seen:]), len(FINISHED)
            if took < seconds:
                writing_from, seconds = writing_from * took / seconds, took
        yield rng.uniform(0.0, seconds) if i % 2 == 0 else rng.uniform(writing_from, seconds)
        i += 1


def timed_in_child(op: Callable[[], object], reader: Callable[[], None]) -> tuple[float, float]:
    """Run ``op`` whole in a forked child, ``reader`` running here as in the trials; returns its seconds and the
    seconds until it wrote its first table (the writing phase), as measured under the trials' conditions."""
    def marking(w: int) -> None:  # the first table written marks the writing phase
        real = TableSetWriter.write_table
        first = []

        def marked(self, *args, **kwargs):
            first or (first.append(1), os.write(w, b"w"))
            return real(self, *args, **kwargs)

        TableSetWriter.write_table = marked

    pid, r = _fork(op, marking)
    os.set_blocking(r, False)
    marks: dict = {}
    try:
        while True:
            try:
                data = os.read(r, 8)
            except BlockingIOError:
                data = None
            now = time.monotonic()
            if data == b"":
                break  # the child exited
            for ch in data or b"":
                marks.setdefault(chr(ch), now)
            reader()
            time.sleep(READER_PAUSE)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "the operation failed in the child"
    return now - marks["g"], marks["w"] - marks["g"]


# ----------------------------------------------------------------------------- publish


def check_versions(reg: Registry, models: dict, checked: set | None = None) -> list[str]:
    """Every listed version is complete and loads the weights its publisher wrote; only versions and staging folders.

    ``checked``: versions already checked (skipped, and the new ones added: a version never changes once listed).
    """
    base = reg.domain_dir(CORPUS, DOMAIN)
    versions = reg.versions(CORPUS, DOMAIN)
    assert versions == [f"v{i}" for i in range(1, len(versions) + 1)], versions  # no gap, no half-visible number
    for v in versions:
        if checked is not None:
            if v in checked:
                continue
            checked.add(v)
        folder = base / v
        assert {p.name for p in folder.iterdir()} == FILES, (v, sorted(p.name for p in folder.iterdir()))
        got = reg.load(CORPUS, DOMAIN, v)
        assert got.meta["version"] == v
        want = models[int(got.meta["data_hash"].split("-")[1])].weights()
        assert all(np.array_equal(got.tensors[k], np.asarray(want[k])) for k in want), v
    strays = [p.name for p in base.iterdir() if p.is_dir() and not registry_mod.VERSION_DIR.fullmatch(p.name)
              and not p.name.startswith(registry_mod.STAGING_PREFIX)]
    assert strays == []
    return versions


def test_kill_9_at_random_points_during_publish(tmp_path):
    """Afterwards no half-visible version; every listed version loads (also while the publisher writes); the
    staging folder a killed publisher left is removed by the next publish."""
    reg = Registry(tmp_path)
    models = {seed: make_model(seed, kind="mlp" if seed % 2 else "linear") for seed in range(4)}
    times = []
    for seed in range(3):
        t0 = time.perf_counter()
        publish(reg, models[seed], tag=str(seed))
        times.append(time.perf_counter() - t0)
    duration = sorted(times)[1]
    rng, delays = random.Random(1903), kill_delays(random.Random(1904), duration, duration / 3)
    kills = trials = left_staging = 0
    checked: set = set()
    while kills < KILLS:
        trials += 1
        assert trials <= MAX_TRIALS, f"only {kills} of {trials} kills landed during a publish"
        seed = rng.randrange(4)
        before = reg.versions(CORPUS, DOMAIN)
        killed = fork_and_kill(lambda: publish(Registry(tmp_path), models[seed], tag=str(seed)), next(delays),
                               reader=lambda: check_versions(Registry(tmp_path), models, checked))
        kills += killed
        after = check_versions(Registry(tmp_path), models, checked)
        assert after[: len(before)] == before and len(after) - len(before) == (len(after) > len(before))
        if not killed:
            assert len(after) == len(before) + 1 and staging_dirs(reg) == []
        left = staging_dirs(reg)
        assert len(left) <= 1
        left_staging += bool(left)
        # the next publish removes what the killed one left and gets the next number
        n = len(after)
        assert publish(reg, models[seed], tag=str(seed)) == f"v{n + 1}"
        assert staging_dirs(reg) == []
        check_versions(reg, models, checked)
    check_versions(Registry(tmp_path), models)  # all of them again, by a new reader
    assert left_staging >= 3, f"only {left_staging} kills landed while a version was staged"
    print(f"publish: {trials} trials, {kills} killed mid-publish, {left_staging} left a staging folder")


def test_a_publisher_killed_between_giving_up_its_folder_and_the_rename_is_cleaned_by_the_next_publish(tmp_path):
    """The one point of a publish the random kills found to leave a staging folder for six hours: the owner file is
    removed (under the domain's lock) just before the rename; killed there, the folder has no owner lock to test."""
    reg = Registry(tmp_path)
    models = {0: make_model(0), 1: make_model(1)}
    publish(reg, models[0], tag="0")

    def killed_at_the_rename() -> None:
        real = registry_mod.fsync_dir

        def die_on_staging(path):
            if Path(path).name.startswith(registry_mod.STAGING_PREFIX) and not (Path(path) / ".owner").exists():
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path)

        registry_mod.fsync_dir = die_on_staging
        publish(Registry(tmp_path), models[1], tag="1")

    assert fork_and_kill(killed_at_the_rename, 30.0)
    [left] = staging_dirs(reg)
    assert (left / "meta.json").is_file() and not (left / ".owner").exists()
    assert reg.versions(CORPUS, DOMAIN) == ["v1"]
    assert publish(reg, models[1], tag="1") == "v2" and staging_dirs(reg) == []
    check_versions(reg, models)


# ----------------------------------------------------------------------------- release


def check_releases(root: Path, states: list[dict]) -> int:
    """The live state is one of ``states`` (one release's, never a mix) and the records r1..rN make it."""
    reg = Registry(root)
    state = reg.live_state("toy")
    assert dict(state.versions) in states, state.versions
    records = reg.releases("toy").records()
    assert [r["release"] for r in records] == list(range(1, state.release + 1))
    assert dict(state.versions) == records[-1]["state"]["versions"] and state.token == records[-1]["token"]
    for a, b in zip(records, records[1:]):  # each release moved from the state the one before it made
        assert {m["domain"]: m["from"] for m in b["moves"]} == {m["domain"]: a["state"]["versions"].get(m["domain"])
                                                                for m in b["moves"]}
    return state.release


def test_kill_9_at_random_points_during_rollback_releases(tmp_path):
    """The planner's rollback (``scripts/release.py release.rollback=true``: the promotion lock, the records, one
    release) killed at random points: the live state is the old or the new one, records r1..rN stay consistent,
    and the next release is neither blocked by a lock nor confused by an orphan record. (tests/test_release.py
    kills ``Registry.release`` itself 24 times.)"""
    reg = _toy_registry(tmp_path)
    states = [{d: v for d in "ABCDE"} for v in ("v1", "v2")]
    for s in states:
        reg.release("toy", s, {"action": "test"})
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        rollback(Registry(tmp_path), "toy", True, log=quiet)
        times.append(time.perf_counter() - t0)
    duration = sorted(times)[2]
    delays = kill_delays(random.Random(1905), duration, duration / 2)
    kills = trials = orphans = 0
    while kills < KILLS:
        trials += 1
        assert trials <= MAX_TRIALS, f"only {kills} of {trials} kills landed during a release"
        before = check_releases(tmp_path, states)
        old = dict(Registry(tmp_path).live_state("toy").versions)
        killed = fork_and_kill(lambda: rollback(Registry(tmp_path), "toy", True, log=quiet), next(delays),
                               reader=lambda: check_releases(tmp_path, states))
        kills += killed
        after = check_releases(tmp_path, states)
        now = dict(Registry(tmp_path).live_state("toy").versions)
        assert (after, now) == (before, old) or (after == before + 1 and now != old), (before, after)
        if not killed:
            assert after == before + 1
        orphans += (tmp_path / "toy" / "_releases" / f"r{after + 1}.json").exists()
        # the next release: not blocked by the killed one's locks, writes over an orphan record
        out = rollback(Registry(tmp_path), "toy", True, log=quiet)
        assert out["release"] == after + 1 and check_releases(tmp_path, states) == after + 1
        assert dict(Registry(tmp_path).live_state("toy").versions) != now
    print(f"release: {trials} trials, {kills} killed mid-release, {orphans} left an orphan record")


# ----------------------------------------------------------------------------- tables: import and prepare


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory):
    """Two 150-utterance, 3-domain corpora (seeds 0 and 1), prepared once, and the n-best export of the first with a
    second, shorter n-best file: the inputs of the prepare and import trials."""
    root = tmp_path_factory.mktemp("faults_sets")
    out = {"root": root, "prepare": {}}
    for seed in (0, 1):
        prepare(small_config(root / f"ref{seed}", seed))
        out["prepare"][seed] = TableSet.open(root / f"ref{seed}" / "data" / "synthetic").manifest
    exported = export_nbest(TableSet.open(root / "ref0" / "data" / "synthetic"), root / "export")
    lines = exported["nbest"].read_text().splitlines(keepends=True)
    short = root / "export" / "nbest_short.jsonl"
    short.write_text("".join(lines[: len(lines) * 2 // 3]))
    out["nbest"], out["gold"] = {0: exported["nbest"], 1: short}, exported["gold"]
    return out


def small_config(output_dir: Path, seed: int, *more: str) -> dict:
    return prepare_config(output_dir, "data.synthetic.n_utterances=150", "data.synthetic.n_domains=3", f"data.synthetic.seed={seed}",
                          "recognizers.n_jobs=1", *more, tiny=True)


def import_cfg(sets, output_dir: Path, which: int, *more: str) -> dict:
    return compose_config("import", ["name=copy", f"nbest={sets['nbest'][which]}", f"gold={sets['gold']}",
                                     f"paths.output_dir={output_dir}", "overwrite=true", *more])


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith((".staging-", ".old-"))) if root.exists() else []


def which_set(path: Path, references: dict) -> int | None:
    """None when there is no set at ``path``; else which reference it is, every file checked against its manifest."""
    try:
        tables = TableSet.open(path)
    except TablesMissing:
        return None
    tables.verify()
    found = [k for k, ref in references.items() if ref == tables.manifest["files"]]
    assert len(found) == 1, "a table set that is neither the old one nor the new one"
    return found[0]


def set_reader(path: Path, references: dict, seen: dict) -> Callable[[], None]:
    """A reader while the set is rebuilt: it opens a whole set (old or new) or none; a read that fails its checksums
    is one that the swap overtook, and only that (the set on disk changed meanwhile)."""
    def read() -> None:
        try:
            tables = TableSet.open(path)
        except TablesMissing:
            seen["absent"] = seen.get("absent", 0) + 1
            return
        try:
            tables.verify()
        except TablesCorrupt:
            with contextlib.suppress(TablesMissing):
                assert TableSet.open(path).manifest != tables.manifest, "a checksum failure with no swap"
            seen["overtaken"] = seen.get("overtaken", 0) + 1
            return
        except FileNotFoundError:  # (the folder was renamed away under the read)
            seen["overtaken"] = seen.get("overtaken", 0) + 1
            return
        assert tables.manifest["files"] in references.values()
        seen["whole"] = seen.get("whole", 0) + 1
    return read


def table_trials(what: str, final: Path, references: dict, run: Callable[[int], object], seed: int) -> dict:
    """Kill ``run(target)`` (which builds reference ``target`` at ``final``) at random points, ``KILLS`` times.

    The kill delays are drawn within the operation's duration measured first, in a child beside the reader (every
    other one within its writing phase)."""
    seen: dict = {}
    target = 1 if which_set(final, references) in (None, 0) else 0
    seconds, writing_from = timed_in_child(lambda: run(target), set_reader(final, references, seen))
    assert which_set(final, references) == target
    delays = kill_delays(random.Random(seed), seconds, writing_from)
    kills = trials = absent = left = 0
    # (a machine busier while the duration was measured puts more kills before the writing phase: trials go on, up to
    # MAX_TRIALS, until at least 3 kills landed while the set was being written)
    while kills < KILLS or left < 3:
        trials += 1
        assert trials <= MAX_TRIALS, f"only {kills} of {trials} kills landed during {what}, {left} while it wrote its set"
        before = which_set(final, references)
        target = 1 if before in (None, 0) else 0
        killed = fork_and_kill(lambda: run(target), next(delays), reader=set_reader(final, references, seen))
        kills += killed
        after = which_set(final, references)
        assert after in (before, target) or (after is None and killed), (before, target, after)
        if not killed:
            assert after == target
        absent += after is None
        left += bool(leftovers(final.parent))
    assert left >= 3, f"only {left} kills landed while {what} was writing its set"
    # the next build removes what the killed ones left, and gives a whole set
    run(0)
    assert leftovers(final.parent) == [] and which_set(final, references) == 0
    print(f"{what}: {trials} trials in {seconds:.2f} s each at most (writing from {writing_from:.2f} s), {kills} killed "
          f"mid-{what}, {left} left a staging or old folder, "
          f"{absent} found the set absent (between the renames); the reader saw {seen}")
    return seen


def test_kill_9_at_random_points_during_import(small_sets, tmp_path):
    """``import name=copy overwrite=true`` from one n-best file and then the other, killed at random points: the set is
    absent or exactly the old or the new one, and a reader never takes a half-written set."""
    refs = {}
    for which in (0, 1):
        import_nbest(import_cfg(small_sets, tmp_path / f"ref{which}", which))
        refs[which] = TableSet.open(tmp_path / f"ref{which}" / "data" / "copy").manifest["files"]
    assert refs[0] != refs[1]
    work = tmp_path / "work"
    import_nbest(import_cfg(small_sets, work, 0))
    table_trials("import", work / "data" / "copy", refs, lambda target: import_nbest(import_cfg(small_sets, work, target)),
                 seed=1906)


def test_kill_9_at_random_points_during_prepare(small_sets, tmp_path):
    """``prepare`` of one corpus and then of another (a changed corpus, same name), killed at random points: the set
    is absent or exactly the old or the new one, and a reader never takes a half-written set."""
    refs = {k: m["files"] for k, m in small_sets["prepare"].items()}
    assert refs[0] != refs[1]
    work = tmp_path / "work"
    shutil.copytree(small_sets["root"] / "ref0" / "data", work / "data")
    assert which_set(work / "data" / "synthetic", refs) == 0
    table_trials("prepare", work / "data" / "synthetic", refs, lambda target: prepare(small_config(work, target)),
                 seed=1907)


# ----------------------------------------------------------------------------- a full disk


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m"):
    """A tmpfs of ``size`` at ``path`` (root only); yields False without one (the injected failures still run)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` but ``leave`` bytes (rounded to pages)."""
    filler = disk / "filler"
    filler.unlink(missing_ok=True)
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY)
    try:
        if free - leave > 0:
            os.posix_fallocate(fd, 0, free - leave)
    finally:
        os.close(fd)
    return filler


class FailingWrites:
    """Every write of an operation (files, tables, JSON, weights) is counted; the ``fail_at``-th writes half of
    its data, then raises ENOSPC, as a full disk does."""

    def __init__(self, monkeypatch, fail_at: int | None):
        self.calls, self.fail_at = 0, fail_at
        real_text, real_bytes, real_save = Path.write_text, Path.write_bytes, registry_mod.save_file

        def hit(path) -> bool:
            self.calls += 1
            return self.calls - 1 == self.fail_at

        def full(path):
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        def write_text(p, data, *a, **k):
            if hit(p):
                real_text(p, data[: len(data) // 2], *a, **k)
                raise full(p)
            return real_text(p, data, *a, **k)

        def write_bytes(p, data):
            if hit(p):
                real_bytes(p, data[: len(data) // 2])
                raise full(p)
            return real_bytes(p, data)

        def save_file(tensors, path, *a, **k):
            if hit(path):
                real_save(tensors, path, *a, **k)
                os.truncate(path, os.path.getsize(path) // 2)
                raise full(path)
            return real_save(tensors, path, *a, **k)

        monkeypatch.setattr(Path, "write_text", write_text)
        monkeypatch.setattr(Path, "write_bytes", write_bytes)
        monkeypatch.setattr(registry_mod, "save_file", save_file)


def assert_disk_full(err: BaseException) -> None:
    """A clear error: ENOSPC, said in words (and the file, when the failing call names one)."""
    text = f"{type(err).__name__}: {err}"
    assert (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left on device" in text, text
    assert "No space left on device" in text, text


def test_a_full_disk_during_publish_fails_clearly_and_leaves_the_registry_as_it_was(tmp_path, monkeypatch):
    """ENOSPC at every write of a publish (injected), then on a real tmpfs filled but a few pages: each publish fails
    with a clear error, no version or staging folder is left, the previous versions load; with room, it succeeds."""
    models = {seed: make_model(seed, kind="mlp") for seed in range(2)}
    reg = Registry(tmp_path / "injected")
    publish(reg, models[0], tag="0")
    counter = FailingWrites(monkeypatch, None)
    publish(reg, models[1], tag="1")
    writes = counter.calls
    assert writes >= 5  # the weights, four JSON files
    failures = 0
    for k in range(writes):
        monkeypatch.undo()
        FailingWrites(monkeypatch, k)
        with pytest.raises(Exception) as err:
            publish(reg, models[1], tag="1")
        monkeypatch.undo()
        assert_disk_full(err.value)
        assert reg.versions(CORPUS, DOMAIN) == ["v1", "v2"] and staging_dirs(reg) == []
        check_versions(reg, models)
        failures += 1
    assert publish(reg, models[1], tag="1") == "v3"

    real_failures, kinds = 0, set()
    with small_disk(tmp_path / "disk") as mounted:
        if mounted:
            reg = Registry(tmp_path / "disk" / "registry")
            publish(reg, models[0], tag="0")
            for pages in range(0, 64):
                filler = fill(tmp_path / "disk", pages * 4096)
                try:
                    v = publish(reg, models[1], tag="1")
                except Exception as err:  # noqa: BLE001 (checked)
                    assert_disk_full(err)
                    kinds.add(f"{type(err).__name__}: {str(err)[:90]}")
                    assert reg.versions(CORPUS, DOMAIN) == ["v1"] and staging_dirs(reg) == []
                    check_versions(reg, models)
                    real_failures += 1
                    continue
                finally:
                    filler.unlink()
                assert v == "v2" and real_failures >= 2
                check_versions(reg, models)
                break
            else:
                raise AssertionError("the publish never fitted on the disk")
    print(f"ENOSPC during publish: {failures} injected failures (one per write), {real_failures} on a full tmpfs "
          f"({'mounted' if mounted else 'mount -t tmpfs not permitted here'}); errors: {sorted(kinds)}")


def test_a_full_disk_during_import_fails_clearly_and_leaves_the_old_set(small_sets, tmp_path, monkeypatch):
    """ENOSPC at every write of an import that replaces a set (injected), then on a real tmpfs: each import fails with
    a clear error, the old set is whole and unchanged, nothing is left behind; with room, the new set is written."""
    from test_import import GOLD, NBEST, files, hyp

    refs, inputs = {}, {}

    def cfg(which: int, out: Path, *more: str) -> dict:
        nbest, gold = inputs[which]
        return compose_config("import", ["name=acme", f"nbest={nbest}", f"gold={gold}", f"paths.output_dir={out}",
                                         "overwrite=true", *more])

    for which, nbest in ((0, NBEST), (1, NBEST + [hyp("a5", "music", "music_play", [("song_name", "halo")])])):
        inputs[which] = files(tmp_path / f"in{which}", nbest, GOLD)
        import_nbest(cfg(which, tmp_path / f"ref{which}"))
        refs[which] = TableSet.open(tmp_path / f"ref{which}" / "data" / "acme").manifest["files"]
    assert refs[0] != refs[1]
    out = tmp_path / "injected"
    import_nbest(cfg(0, out))
    final = out / "data" / "acme"
    counter = FailingWrites(monkeypatch, None)
    import_nbest(cfg(1, tmp_path / "count"))
    writes = counter.calls
    monkeypatch.undo()
    assert writes >= 10  # every table, the manifest, the summaries
    failures = 0
    for k in range(writes):
        FailingWrites(monkeypatch, k)
        with pytest.raises(Exception) as err:
            import_nbest(cfg(1, out))
        monkeypatch.undo()
        assert_disk_full(err.value)
        assert which_set(final, refs) == 0 and leftovers(final.parent) == []
        failures += 1
    import_nbest(cfg(1, out))
    assert which_set(final, refs) == 1

    real_failures, kinds = 0, set()
    with small_disk(tmp_path / "disk", "8m") as mounted:
        if mounted:
            data = tmp_path / "disk" / "data"
            import_nbest(cfg(0, tmp_path / "elsewhere", f"paths.data_dir={data}"))
            final = data / "acme"
            for pages in range(0, 256, 2):
                filler = fill(tmp_path / "disk", pages * 4096)
                try:
                    import_nbest(cfg(1, tmp_path / "elsewhere", f"paths.data_dir={data}"))
                except Exception as err:  # noqa: BLE001 (checked)
                    assert_disk_full(err)
                    kinds.add(f"{type(err).__name__}: {str(err)[:90]}")
                    assert which_set(final, refs) == 0 and leftovers(data) == []
                    real_failures += 1
                    continue
                finally:
                    filler.unlink()
                assert which_set(final, refs) == 1 and leftovers(data) == [] and real_failures >= 2
                break
            else:
                raise AssertionError("the import never fitted on the disk")
    print(f"ENOSPC during import: {failures} injected failures (one per write), {real_failures} on a full tmpfs "
          f"({'mounted' if mounted else 'mount -t tmpfs not permitted here'}); errors: {sorted(kinds)}")


# ----------------------------------------------------------------------------- unreadable registry files under load


@pytest.fixture(scope="module")
def serving_world(prepared, tmp_path_factory):
    """The tiny prepared corpus with every domain's v1 (live) and v2 (another bias) published: models with random
    weights of the tables' own specs (what is served matters here, not how well it ranks)."""
    import torch

    from rerank.model.spec import spec_from_manifest
    from rerank.training.model import DomainReranker

    registry = tmp_path_factory.mktemp("faults_serve") / "registry"
    reg = Registry(registry)
    domains = list(prepared.manifest["domains"])
    for i, d in enumerate(domains):
        model = DomainReranker(spec_from_manifest(prepared.manifest, d))
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            model.linear.weight.copy_(torch.randn(model.linear.weight.shape, generator=g) * 0.3)
        for bias in (0.0, 0.6):
            with torch.no_grad():
                model.linear.bias.fill_(bias)
            reg.publish(SERVED, d, model, loss="crossentropy", config={}, metrics={}, data_hash=f"bias-{bias}")
    reg.release(SERVED, {d: "v1" for d in domains}, {"action": "test fixture"})
    return type("World", (), {"output_dir": prepared.output_dir, "registry": registry, "domains": domains})


SERVED = "synthetic"


def name_is_state(domain: str) -> bool:
    return domain == "_releases"


def _hide_by_rename(path: Path) -> Callable[[], None]:
    hidden = path.with_name(".hidden-" + path.name)
    path.rename(hidden)  # open() fails: ENOENT (a shared disk that does not show the file yet)
    return lambda: hidden.rename(path)


def _replace_by_directory(path: Path) -> Callable[[], None]:
    hidden = path.with_name(".hidden-" + path.name)
    path.rename(hidden)
    path.mkdir()  # open() fails: EISDIR
    (path / "x").write_text("not weights")

    def restore() -> None:
        shutil.rmtree(path)
        hidden.rename(path)
    return restore


def _replace_by_symlink_loop(path: Path) -> Callable[[], None]:
    hidden = path.with_name(".hidden-" + path.name)
    path.rename(hidden)
    path.symlink_to(path.name)  # open() fails even for root: ELOOP
    return lambda: (path.unlink(), hidden.rename(path))


def test_unreadable_registry_files_while_the_service_runs_under_load(serving_world, tmp_path):
    """Tests run as root, whom permission bits do not stop, so a version's weights are made unreadable by what stops
    ``open()`` for anyone: renamed away (ENOENT), replaced by a directory (EISDIR), by a symlink loop (ELOOP); then
    the live state itself. Under load, for each: no request fails, every response is scored by one whole release,
    the old one until the file reads again, ``/health`` says ``degraded`` naming the domain (or ``_releases``) from
    its first such answer until the release is served, and ``ok`` after."""
    from test_serve import _client_loop, service, utterances

    registry = tmp_path / "registry"
    shutil.copytree(serving_world.registry, registry)
    reg = Registry(registry)
    a, b, c, d = serving_world.domains[:4]
    pool = utterances(serving_world, 30)
    v1 = {x: "v1" for x in (a, b, c, d)}
    faults = [  # (what, the release's moves, the domain whose file fails, the file, how)
        ("weights renamed away", {a: "v2", b: "v2"}, b, "weights.safetensors", _hide_by_rename),
        ("weights replaced by a directory", {c: "v2"}, c, "weights.safetensors", _replace_by_directory),
        ("spec.json a symlink loop", {d: "v2"}, d, "spec.json", _replace_by_symlink_loop),
        # the live state itself: no release (a release cannot be written over an unreadable state); the old one serves
        ("the live state a symlink loop", {}, "_releases", None, _replace_by_symlink_loop),
    ]
    phases = []
    with service(serving_world, registry) as url, httpx.Client(base_url=url, timeout=10) as probe:
        stop, out, errors = threading.Event(), [], []
        clients = [threading.Thread(target=_client_loop, args=(url, pool, stop, out, errors)) for _ in range(3)]
        for t in clients:
            t.start()
        try:
            time.sleep(0.8)
            state = dict(v1)
            for what, moves, domain, name, make_unreadable in faults:
                new = {**state, **moves}
                t_release = time.monotonic()
                if name is None:
                    number = reg.live_state(SERVED).release  # (what serves, and stays live)
                    restore = make_unreadable(reg.releases(SERVED).state_path)
                else:
                    restore = make_unreadable(registry / SERVED / domain / moves[domain] / name)
                    number = reg.release(SERVED, moves, {"action": "release", "verdict": what})["release"]
                health, deadline = [], time.monotonic() + 6.0
                while time.monotonic() < deadline and not (health and health[-1]["status"] == "degraded"
                                                           and sum(h["status"] == "degraded" for h in health) >= 5):
                    health.append(probe.get("/health").json())
                    time.sleep(0.1)
                served_meanwhile = probe.get("/versions").json()["versions"]
                t_restore = time.monotonic()
                restore()
                deadline = time.monotonic() + 15.0
                while {x: probe.get("/versions").json()["versions"][x] for x in new} != new:
                    health.append(probe.get("/health").json())
                    assert time.monotonic() < deadline, f"{what}: the release was not served once the file read again"
                    time.sleep(0.1)
                t_served = time.monotonic()
                time.sleep(0.5)
                after = probe.get("/health").json()
                phases.append((what, domain, state, new, number, t_release, t_restore, t_served, health, served_meanwhile,
                               after))
                state = new
        finally:
            stop.set()
            for t in clients:
                t.join(timeout=30)
    assert errors == [] and len(out) > 100, errors[:3]
    watched = (a, b, c, d)
    for what, domain, old, new, number, t_release, t_restore, t_served, health, served_meanwhile, after in phases:
        seen = [({x: r[3]["versions"][x] for x in watched}, r) for r in out if r[0] > t_release and r[1] < t_served]
        assert seen, what
        # one whole release per response: the old one until the file read again, never the new one before
        assert all(v in (old, new) for v, _ in seen), (what, [v for v, _ in seen if v not in (old, new)][:3])
        assert all(v == old for v, r in seen if r[1] < t_restore), what
        assert {x: served_meanwhile[x] for x in watched} == old
        assert all({x: r[3]["versions"][x] for x in watched} == new for r in out if t_served < r[0] < t_served + 0.5), what
        # /health: degraded naming the domain from its first such answer while the release was not served (an answer
        # names the release its worker serves), ok once it was
        statuses = [h["status"] for h in health]
        assert "degraded" in statuses, (what, health[:3])
        first = statuses.index("degraded")
        behind = [h for h in health[first:] if h["release"] < number or name_is_state(domain)]  # (state: all before restore)
        assert behind and all(h["status"] == "degraded" and h["domain"] == domain and not h["refused"] for h in behind), \
            (what, [h for h in behind if h["status"] != "degraded" or h.get("domain") != domain][:2])
        assert all(h["status"] == "ok" for h in health if h["release"] == number and not name_is_state(domain)), what
        assert after["status"] == "ok" and "domain" not in after and after["release"] == number, (what, after)
    print(f"unreadable files under load: {len(phases)} faults, {len(out)} responses, no error; "
          + "; ".join(f"{p[0]}: served {p[7] - p[5]:.1f} s after the release, {p[7] - p[6]:.1f} s after the repair"
                     for p in phases))
