"""Infrastructure shared by both papers' packages (``healswin_jax`` and ``ntk``); imports neither.

- :mod:`infra.xla_cpu`: an XLA:CPU crash work-around applied on ``import healswin_jax`` / ``import ntk``.
- :mod:`infra.mesh`: 1-D device meshes and the shardings built on them.
- :mod:`infra.bundled_data`: small real datasets shipped inside PyPI packages (MNIST-5k, sklearn digits).
- :mod:`infra.cli`: the command line and output convention of every experiment and benchmark.
- :mod:`infra.results`: ``results/<experiment>/<variant>.json`` run records.
- :mod:`infra.checkpoint`: the one Orbax checkpoint layout of both training stacks.
- :mod:`infra.run_guard`: one owner per run directory (a lock file) and checkpoints stamped with their config.
- :mod:`infra.metrics`: classification accuracy, the one metric both packages use with one meaning.
- :mod:`infra.files`: reading input files so that every failure names the file and the fix.
"""
