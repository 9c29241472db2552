"""``train(cfg)``: one domain's re-ranker, from its hypothesis tables to a published version.

The Hydra entry point ``scripts/train.py`` is a thin wrapper over this
function, so tests and notebooks call it with a composed config. ``model=linear|mlp``
train in torch under a Lightning ``Trainer``; ``model=trees`` is fitted by LightGBM
(:mod:`rerank.training.trees`) in the same job, with no Trainer and no checkpoint.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import lightning.pytorch as L
import numpy as np
import torch
from hydra.utils import instantiate

from rerank.hypotheses.evidence import TEXT_FIELDS
from rerank.hypotheses.tables import TableSet, open_tables
from rerank.losses import LOSSES, PADDED_Y_VALUE, build_loss, loss_argument
from rerank.metrics.logistic import sigmoid
from rerank.model.registry import Registry
from rerank.model.spec import evidence_fields, spec_from_manifest
from rerank.training.cli import in_multirun
from rerank.training.competitors import other_domains, world_of
from rerank.training.data import SlateTensors, competitor_numbers, to_slates
from rerank.training.datamodule import SlateDataModule
from rerank.training.model import DomainReranker
from rerank.training.module import RerankerModule, build_model, build_optimizer, slate_metrics
from rerank.training.trees import TreeReranker

log = logging.getLogger(__name__)
#: slates.candidates: the domain's own n-best, or the utterance's whole cross-domain list
CANDIDATES = ("domain", "utterance")


class UnknownDomain(ValueError):
    pass


class NoPositives(ValueError):
    pass


def torch_threads(cfg: Mapping[str, Any]) -> int:
    """Threads of this job: the machine's cores shared by the jobs running in parallel."""
    threads = cfg.get("threads", "auto")
    if threads != "auto":
        return max(1, int(threads))
    parallel = max(1, int(cfg.get("parallel_jobs") or 1))
    return max(1, (os.cpu_count() or 1) // parallel)


def quiet_lightning() -> None:
    """Lightning's banners (GPU/TPU availability, tips) drown the one line per run that matters."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")


def train(cfg: Mapping[str, Any]) -> dict:
    """Train, select on dev, publish. ``cfg`` is a plain dict composed from ``configs/train.yaml``.

    ``cfg["model"]``, ``cfg["loss"]`` and ``cfg["optimizer"]["torch"]`` are Hydra nodes
    (``_target_``) that build the model (given the domain's feature spec), the loss and
    the optimizer; ``cfg["slates"]`` says which candidate list a listwise loss sees.
    """
    t_start = time.perf_counter()
    quiet_lightning()
    torch.set_num_threads(torch_threads(cfg))
    L.seed_everything(int(cfg["seed"]), workers=True, verbose=False)
    loss_cfg, optim_cfg, model_cfg, slates_cfg = dict(cfg["loss"]), dict(cfg["optimizer"]), dict(cfg["model"]), dict(cfg["slates"])
    # built (and their arguments checked) before any data is read: a misspelt key fails at once
    build_loss(loss_cfg)
    loss = loss_cfg["name"]  # the short name: registry metadata, folders, printed lines
    make_model = build_model(model_cfg)
    trees = getattr(make_model.func, "kind", None) == "trees"
    if trees and LOSSES[loss].listwise:
        raise ValueError(f"model=trees fits LightGBM's binary objective on semer == 0, a pointwise loss: use loss=crossentropy "
                         f"(not loss={loss}, a listwise one)")
    build_optimizer(optim_cfg)
    if slates_cfg["candidates"] not in CANDIDATES:
        raise ValueError(f"slates.candidates must be one of {CANDIDATES}, not {slates_cfg['candidates']!r}")
    tables = open_tables(cfg)
    manifest = tables.manifest
    domain = cfg["domain"]
    if domain not in manifest["domains"]:
        raise UnknownDomain(f"unknown domain {domain!r} for corpus {manifest['corpus']!r}; its domains: {', '.join(manifest['domains'])}")
    corpus = manifest["corpus"]
    registry = Registry(cfg["paths"]["registry_dir"])

    timing = {"setup": time.perf_counter() - t_start}
    t = time.perf_counter()
    feat_cfg = cfg["features"]
    spec = spec_from_manifest(manifest, domain, list(feat_cfg["evidence"]), on_missing=feat_cfg["on_missing"])
    if skipped := [f for f in feat_cfg["evidence"] if f not in spec.evidence]:
        print(f"train {domain}: its tables do not fill the evidence {skipped}; trained without it (features.on_missing=skip)")
    world = world_of(slates_cfg.get("world"), domain)
    if world is not None:  # the published config records the world itself, not a file that may be gone
        cfg = {**cfg, "slates": {**slates_cfg, "world": world}}
        slates_cfg = dict(cfg["slates"])
    slates = {}
    # the whole cross-domain list: for the losses that see it (semer, combined; crossentropy is pointwise)
    utterance = slates_cfg["candidates"] == "utterance" and LOSSES[loss].listwise
    for split in ("train", "dev"):
        s = to_slates(tables.read(domain, split), spec)
        if utterance:
            add_competitors(s, tables, domain, split, float(loss_argument(loss_cfg, "temperature")), slates_cfg["competitors"], registry,
                            world)
        slates[split] = s
    check_trainable(slates["train"], domain)

    model: DomainReranker | TreeReranker = make_model(spec)
    # A name of its own per run: jobs of one sweep start together and must not share
    # a TensorBoard version folder or a checkpoint file.
    run_name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.time_ns() % 10**6:06d}"
    logger_cfg = cfg.get("logger")
    if logger_cfg:
        named = {} if logger_cfg.get("name") else {"name": f"{cfg['data']['name']}/{domain}/{loss}"}
        logger = instantiate(logger_cfg, **named, **({} if logger_cfg.get("version") else {"version": run_name}))
    else:
        logger = False
    if trees:
        timing["data"] = time.perf_counter() - t
        t_fit = time.perf_counter()
        fitted = model.fit(slates["train"], slates["dev"], seed=int(cfg["seed"]), threads=torch_threads(cfg), logger=logger)
        epochs, rows_seen = fitted["trees"], fitted["rows"] * fitted["rounds"]
    else:
        valid = slates["train"].semer != PADDED_Y_VALUE
        model.fit_standardisation(slates["train"].x[valid])
        module = RerankerModule(model, loss_cfg, optim_cfg, slates["dev"].errors, slates["dev"].total)
        batch_size = optim_cfg["batch_size"]  # null: the full batch (L-BFGS)
        dm = SlateDataModule(slates["train"], slates["dev"], batch_size=None if batch_size is None else int(batch_size),
                             seed=int(cfg["seed"]))
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
        root = Path(cfg["paths"]["log_dir"]) / "checkpoints" / corpus / domain / f"{loss}-{run_name}"
        trainer: L.Trainer = instantiate(cfg["trainer"], logger=logger, callbacks=callbacks, default_root_dir=str(root))
        timing["data"] = time.perf_counter() - t
        t_fit = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        restore_best(trainer, module)
        module.eval()
        epochs, rows_seen = trainer.current_epoch, module.rows_seen
    fit_seconds = time.perf_counter() - t_fit
    timing["fit"] = fit_seconds
    calibration = cfg.get("calibration", "none")
    if calibration not in ("none", "platt"):
        raise ValueError(f"calibration must be 'none' or 'platt', not {calibration!r}")
    if calibration == "platt" or (trees and model.platt):
        dv = slates["dev"]
        valid = dv.semer != PADDED_Y_VALUE
        if bool((dv.semer[valid] == 0).any()) and bool((dv.semer[valid] != 0).any()):
            model.fit_calibration(dv.x[valid], (dv.semer[valid] == 0).float())
        else:
            log.warning("%s: dev holds only right or only wrong hypotheses; no Platt scaling", domain)

    with torch.no_grad():
        dev_logits = np.asarray(model(slates["dev"].x))
    dev = slate_metrics(dev_logits, slates["dev"].semer.numpy(), slates["dev"].errors, slates["dev"].total)
    result = {
        "corpus": corpus, "domain": domain, "loss": loss, "dev": dev,
        "train_hypotheses": slates["train"].n_hypotheses, "epochs": epochs,  # (trees: the trees kept)
        "fit_seconds": round(fit_seconds, 3),
        "hypotheses_per_second": rows_seen / fit_seconds if fit_seconds > 0 else float("nan"),
    }
    t = time.perf_counter()
    pictures = cfg.get("pictures", "auto")
    if pictures == "auto":  # 0.3-0.6 s of matplotlib a job, as much as a small domain's fit: in single runs only
        pictures = not in_multirun()
    if logger and pictures:
        log_pictures(logger, model, dev_logits, slates["dev"], domain, loss, dev)
    timing["pictures"] = time.perf_counter() - t
    t = time.perf_counter()
    if cfg.get("publish", True) and not cfg["trainer"].get("fast_dev_run"):
        # A model that reads text-derived evidence carries the data it is computed from (its service computes it), when
        # rerank computed those fields in its tables: fields an n-best gave are the client's to send.
        text_fields = [f for f in evidence_fields(spec.evidence) if f in TEXT_FIELDS]
        computed = (manifest.get("computed_evidence") or {}).get(domain)
        if computed is None and manifest.get("origin") == "prepared":  # (a set prepared before the list was kept)
            computed = TEXT_FIELDS
        reads_text = bool(text_fields) and set(text_fields) <= set(computed or ())
        result["version"] = registry.publish(
            corpus, domain, model, loss=loss, config=cfg, metrics=dev,
            data_hash=f"{manifest['corpus_hash']}:{manifest['settings_hash']}",
            resources=tables.resources(domain) if reads_text else None,
        )
    timing["publish"] = time.perf_counter() - t
    result["seconds"] = round(time.perf_counter() - t_start, 3)
    result["timing"] = {k: round(v, 4) for k, v in timing.items()}
    print(f"train {corpus}/{domain} loss={loss}: dev SemER {dev.get('semer', float('nan')):.4f} "
          f"IRER {dev.get('irer', float('nan')):.4f} ECE(top) {dev.get('ece_top', float('nan')):.4f}"
          + (f" -> published {result['version']}" if "version" in result else ""))
    return result


def add_competitors(s: SlateTensors, tables: TableSet, domain, split, temperature: float, competitors: str, registry,
                    world: dict[str, str] | None = None) -> None:
    """The other domains' two numbers per utterance (``slates.candidates=utterance``), at the loss's temperature."""
    ou, ol, os_ = other_domains(tables, domain, split, competitors, registry, world)
    lse, expected = competitor_numbers(s.utt_index, ou, ol, os_, temperature)
    s.other_logsumexp = torch.from_numpy(lse.astype(np.float32))
    s.other_expected_semer = torch.from_numpy(expected.astype(np.float32))


def check_trainable(s: SlateTensors, domain: str) -> None:
    valid = s.semer != PADDED_Y_VALUE
    if not bool(valid.any()):
        raise NoPositives(f"domain {domain!r} emitted no training hypothesis: nothing to learn from")
    if not bool((s.semer[valid] == 0).any()):
        raise NoPositives(f"domain {domain!r} has no correct training hypothesis among {int(valid.sum())}: "
                          "a re-ranker trained on it would only learn to say no. Check its recognizers or its data.")


def restore_best(trainer: L.Trainer, module: RerankerModule) -> None:
    """Load the best dev checkpoint as data (``weights_only=True``)."""
    ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
    if ckpt and Path(ckpt).exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])


def log_pictures(logger, model: DomainReranker | TreeReranker, dev_logits: np.ndarray, dev: SlateTensors, domain: str, loss: str,
                 metrics: dict) -> None:
    from rerank.plots import feature_weights, reliability_diagram

    exp = getattr(logger, "experiment", None)
    if exp is None or not hasattr(exp, "add_figure"):
        return
    valid = dev.semer.numpy() != PADDED_Y_VALUE
    p = sigmoid(dev_logits[valid])
    correct = (dev.semer.numpy()[valid] == 0).astype(float)
    exp.add_figure("dev/reliability", reliability_diagram({f"{domain} {loss}": (p, correct)}, title=f"{domain}: all dev hypotheses"))
    weights = model.feature_weights()
    if weights is not None:  # (trees have none)
        exp.add_figure("weights/heatmap", feature_weights({domain: weights}))
        for name, w in weights.items():
            exp.add_scalar(f"weights/{name}", w)
    logger.log_hyperparams({"domain": domain, "loss": loss}, {f"hp/{k}": v for k, v in metrics.items()})
