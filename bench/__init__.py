"""Benchmarks of the WSSS pipeline (``make bench``; ``python -m bench.run --help``).

One module per figure (``growing``, ``crf``, ``crf_train``, ``heatmaps``, ``training``,
``dsrg_loss``, ``seeds``, ``flops``, ``demo``), each with ``run(cfg, ctx) -> rows``; configurations
in ``bench/config.py``; straightforward baselines (not used by the pipeline) in
``bench/baselines.py``. The benchmarks call the library (``pipeline/``, ``stages/``); they
re-implement nothing but the baselines. Separate entry points: ``bench.crf_agreement`` (the two
training-CRF backends on a demo's own inputs) and ``bench.gpu_check`` (``make gpu-check``).
"""
