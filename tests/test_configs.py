"""Every config composes, every ``_target_`` in it builds, and a misspelt key fails loudly.

The train config is composed with each option of its groups (model, loss,
optimizer, slates, experiment); the other entry points' configs as they are, and the
benchmarks' (configs/bench.yaml) with each option of bench, whose function is looked up
but not run.
The objects are built as ``train()`` builds them: the loss is called on a small
slate, the optimizer on a dummy parameter, the model on a small feature spec.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from rerank.losses import LOSSES, PADDED_Y_VALUE, build_loss
from rerank.model.spec import FeatureSpec
from rerank.training.model import DomainReranker
from rerank.training.module import build_model, build_optimizer

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
TRAIN_GROUPS = ("model", "loss", "optimizer", "slates", "experiment")
OTHER_CONFIGS = ("prepare", "merge", "import", "export", "promote", "registry", "serve", "release")
SPEC = FeatureSpec(domain="toy", intents=("a", "b"), context=(("device", ("tv", "phone")),), slot_types=("song",), n_ranks=2,
                   evidence=("length",))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def compose_dict(name: str, overrides=()) -> dict:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def target_nodes(node, path=()):
    """(path, node) of every ``_target_`` node (not looking inside one), and the loss (looked up by its name)."""
    if isinstance(node, dict):
        if "_target_" in node or path == ("loss",):
            yield path, node
            return
        for k, v in node.items():
            yield from target_nodes(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from target_nodes(v, (*path, i))


def slate():
    y_pred = torch.tensor([[0.5, -1.0, 2.0], [0.1, 0.0, 0.0]], requires_grad=True)
    y_true = torch.tensor([[0.0, 1.0, 0.5], [1.0, PADDED_Y_VALUE, PADDED_Y_VALUE]])
    return y_pred, y_true


@pytest.fixture
def deterministic_flag():
    """``Trainer(deterministic=True)`` switches torch's global flag: put it back."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def build_every_target(cfg: dict, tmp_path: Path) -> dict[tuple, object]:
    """Build each ``_target_`` node of a composed config, as the toolkit builds it."""
    built = {}
    for path, node in target_nodes(cfg):
        if path == ("loss",):
            loss = build_loss(node)
            value = loss(*slate())
            assert value.dim() == 0 and torch.isfinite(value)
            value.backward()
            built[path] = loss
        elif path == ("model",):
            model = build_model(node)(SPEC)
            if model.kind == "trees":  # (LightGBM fits it: nothing to call before the fit)
                assert node["_target_"] == "rerank.training.trees.TreeReranker" and model.spec is SPEC
            else:
                assert isinstance(model, DomainReranker) and model.kind == node["kind"]
                assert model(torch.zeros(4, SPEC.dim)).shape == (4,)
            built[path] = model
        elif path == ("optimizer", "torch"):
            optimizer = build_optimizer(cfg["optimizer"])([torch.nn.Parameter(torch.zeros(3))])
            assert isinstance(optimizer, torch.optim.Optimizer)
            assert type(optimizer) is get_class(node["_target_"])
            built[path] = optimizer
        elif path == ("trainer",):
            built[path] = instantiate(node, logger=False, callbacks=[], default_root_dir=str(tmp_path / "trainer"))
        elif path == ("logger",):
            built[path] = instantiate(node, name="composed")
        else:
            built[path] = instantiate(node, _convert_="all")
        assert built[path] is not None, path
    return built


def test_every_group_has_options():
    for group in TRAIN_GROUPS:
        assert options(group), f"configs/{group}/ is empty"
    assert set(options("loss")) == set(LOSSES)


@pytest.mark.parametrize("group,option", [(g, o) for g in TRAIN_GROUPS for o in options(g)])
def test_train_option_composes_and_builds(group, option, tmp_path, deterministic_flag):
    cfg = compose_dict("train", ["domain=Music", f"{group}={option}", f"paths.output_dir={tmp_path}"])
    built = build_every_target(cfg, tmp_path)
    # what train() builds is there, whatever the option
    assert {("loss",), ("model",), ("optimizer", "torch"), ("trainer",), ("logger",)} <= set(built)
    if group == "loss":
        assert built[("loss",)].func is LOSSES[option].fn
    assert set(cfg["slates"]) == {"candidates", "competitors", "world"}
    assert cfg["optimized_metric"] == "semer"
    # non-constructor settings sit beside the optimizer, never inside what torch gets
    assert {"batch_size", "l2"} <= set(cfg["optimizer"]) and not {"batch_size", "l2"} & set(cfg["optimizer"]["torch"])
    assert "candidates" not in cfg["loss"] and "competitors" not in cfg["loss"]


@pytest.mark.parametrize("name", OTHER_CONFIGS)
def test_other_configs_compose_and_build(name, tmp_path, deterministic_flag):
    cfg = compose_dict(name, [f"paths.output_dir={tmp_path}"])
    build_every_target(cfg, tmp_path)


@pytest.mark.parametrize("bench", options("bench"))
def test_every_bench_composes_and_names_a_function_of_benchmarks(bench, tmp_path):
    """``python benchmarks/run.py bench=<x>``: the option composes, and its ``_target_`` is a function in benchmarks/ that
    takes the option's keys (a speed benchmark) or the whole config and the command line (``_partial_``: suite, ablation)."""
    import inspect

    from hydra.utils import get_method

    cfg = compose_dict("bench", [f"bench={bench}", f"paths.output_dir={tmp_path}"])
    node = cfg["bench"]
    assert node["_target_"].startswith("benchmarks."), node["_target_"]
    fn = get_method(node["_target_"])
    keys = {k: v for k, v in node.items() if not k.startswith("_")}
    if node.get("_partial_"):
        assert keys == {} and {"benchmark", "data", "recognizers", "hypotheses", "gate", "paths", "seed"} <= set(cfg)
        inspect.signature(fn).bind(cfg, cli_overrides=[])
    else:
        inspect.signature(fn).bind(**keys)  # every key is a parameter, and every parameter without a default is set


def test_the_defaults_are_the_yaml_ones():
    cfg = compose_dict("train", ["domain=Music"])
    assert cfg["loss"] == {"name": "combined", "alpha": 0.5, "temperature": 0.5}
    assert cfg["slates"] == {"candidates": "utterance", "competitors": "baseline", "world": None}
    assert cfg["gate"]["policy"] == "bounded_harm" and cfg["release"]["coadapt"] is False
    loss = build_loss(cfg["loss"])
    assert isinstance(loss, functools.partial) and loss.keywords == {"alpha": 0.5, "temperature": 0.5}
    assert cfg["model"]["kind"] == "linear" and cfg["optimizer"]["torch"]["_target_"] == "torch.optim.LBFGS"
    assert cfg["optimizer"]["batch_size"] is None  # L-BFGS: the full batch


@pytest.mark.parametrize("name,loss,candidates,competitors", [
    ("r1_domain", "semer", "domain", "baseline"),
    ("r1_utterance_baseline", "semer", "utterance", "baseline"),
    ("r1_utterance_live", "semer", "utterance", "live"),
    ("r2", "crossentropy", "domain", "baseline"),
    ("r3_domain", "combined", "domain", "baseline"),
    ("r3_utterance_baseline", "combined", "utterance", "baseline"),
    ("r3_utterance_live", "combined", "utterance", "live"),
    ("r3_platt", "combined", "utterance", "baseline"),
    ("r3_mlp", "combined", "domain", "baseline"),
])
def test_experiments_set_the_rows_settings_and_the_command_line_wins(name, loss, candidates, competitors):
    cfg = compose_dict("train", ["domain=Music", f"experiment={name}"])
    assert cfg["loss"]["name"] == loss and build_loss(cfg["loss"]).func is LOSSES[loss].fn
    assert cfg["slates"] == {"candidates": candidates, "competitors": competitors, "world": None}
    assert cfg["calibration"] == ("platt" if name.endswith("platt") else "none")
    assert cfg["model"]["kind"] == ("mlp" if name.endswith("mlp") else "linear")
    # the benchmark's grid (and any other override) goes on top of an experiment
    grid = [] if loss == "crossentropy" else ["loss.temperature=2.0"]
    over = compose_dict("train", ["domain=Music", f"experiment={name}", *grid, "slates=domain", "model=linear", "calibration=none"])
    assert over["slates"]["candidates"] == "domain" and over["model"]["kind"] == "linear" and over["calibration"] == "none"
    assert loss == "crossentropy" or over["loss"]["temperature"] == 2.0


def test_misspelt_keys_fail_loudly():
    for bad in ("loss.alpah=0.3", "optimizer.torch.lrr=0.1", "optimizer.batchsize=64", "model.hiden=8", "slates.candidate=utterance",
                "optimised_metric=irer"):
        with pytest.raises(ConfigCompositionException):
            compose_dict("train", ["domain=Music", bad])
    with pytest.raises(MissingConfigException):
        compose_dict("train", ["domain=Music", "experiment=r3_domian"])
    # an appended key reaches the function, which refuses it when the object is built
    cfg = compose_dict("train", ["domain=Music", "+loss.alpah=0.3"])
    with pytest.raises(TypeError, match="alpah"):
        build_loss(cfg["loss"])
    cfg = compose_dict("train", ["domain=Music", "+optimizer.torch.momentum=0.9"])  # not an L-BFGS argument
    with pytest.raises(TypeError, match="momentum"):
        build_optimizer(cfg["optimizer"])
    cfg = compose_dict("train", ["domain=Music", "+model.hiden=8"])
    with pytest.raises(TypeError, match="hiden"):
        build_model(cfg["model"])


def test_a_misspelt_key_fails_before_any_data_is_read(tmp_path):
    from rerank.training.train import train

    cfg = compose_dict("train", ["domain=Music", "+loss.alpah=0.3", f"paths.output_dir={tmp_path / 'nothing'}"])
    with pytest.raises(TypeError, match="alpah"):  # not TablesMissing: the tables are never looked for
        train(cfg)
    cfg = compose_dict("train", ["domain=Music", "slates.candidates=everything", f"paths.output_dir={tmp_path / 'nothing'}"])
    with pytest.raises(ValueError, match="slates.candidates"):
        train(cfg)


def test_a_loss_that_is_not_registered_is_refused():
    with pytest.raises(ValueError, match="unknown loss 'mse'.*combined"):
        build_loss({"name": "mse"})
    with pytest.raises(ValueError, match="names its loss"):
        build_loss({"_target_": "torch.nn.functional.mse_loss", "_partial_": True})


def test_the_main_job_routes_each_option_to_the_steps_that_have_it():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pipeline", REPO / "scripts" / "pipeline.py")
    pipeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pipeline)
    routed = pipeline.route(["data=hwu64", "recognizers=neural", "loss=semer", "gate.policy=no_harm", "paths.output_dir=/x"])
    assert routed["prepare"] == ["data=hwu64", "recognizers=neural", "paths.output_dir=/x"]
    assert routed["train"] == ["data=hwu64", "loss=semer", "gate.policy=no_harm", "paths.output_dir=/x"]
    assert routed["merge"] == ["data=hwu64", "paths.output_dir=/x"]
    with pytest.raises(SystemExit, match="recognisers=neural"):
        pipeline.route(["recognisers=neural"])  # misspelt: fails at once, naming it
