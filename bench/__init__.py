"""Benchmarks of the WSSS pipeline (``make bench``; ``python -m bench.run --help``).

One module per figure (``growing``, ``crf``, ``heatmaps``, ``training``, ``dsrg_loss``, ``seeds``,
``flops``, ``demo``), each with ``run(cfg, ctx) -> rows``; configurations in ``bench/config.py``;
straightforward baselines (not used by the pipeline) in ``bench/baselines.py``. The benchmarks call
the library (``pipeline/``, ``stages/``); they re-implement nothing but the baselines.
"""
