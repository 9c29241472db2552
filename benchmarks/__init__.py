"""The benchmarks of the project, beside the package (not part of it): ``python benchmarks/run.py bench=<name>``.

The library (``rerank/``) never imports this folder and does not ship it (``pyproject.toml`` packages
``rerank*`` and ``hydra_plugins*`` only; ``tests/test_layers.py`` checks both). It is importable as
``benchmarks`` from the repository's root: ``benchmarks/run.py`` puts the root on ``sys.path``, and
pytest does through ``pythonpath = ["."]`` (``pyproject.toml``).

- ``run.py``: the one entry point, a Hydra app over ``configs/bench.yaml``; ``bench`` is a config group
  (``configs/bench/``), one option per benchmark, whose ``_target_`` is the function here that runs it.
- The quality suite: ``suite.py`` (``run_benchmark``, one method per result row; ``bench=suite``) and
  ``ablation.py`` (``run_ablation``; ``bench=ablation``), with ``runs.py`` (training the rows),
  ``alternatives.py`` (Platt, the joint model, LambdaMART), ``update.py`` (the asynchronous update),
  ``speed.py`` (the suite's speed figures) and ``report.py`` (report.md and the sections of BENCHMARKS.md).
- The speed benchmarks: ``prepare_speed``, ``train_speed``, ``merge_speed``, ``import_speed``,
  ``serve_load`` (with ``serve_floor`` and ``wrk_bodies.lua``), ``scale``, ``release_scale``,
  ``text_speed``, ``ray_cluster``; how they measure, defined once: ``measure.py``.
"""
