"""Pipeline stages: one module per stage, each with ``STAGE``, ``UPSTREAM`` and ``run(ctx)``."""
