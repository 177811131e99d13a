"""The sweep: every variant × target × precision exported, checked, timed and estimated,
each cell in its own worker process (``worker``), resumable (``run``: fingerprints of
each stage's inputs), with results.json/csv (``results``) and the HTML report.

    from evit_export.sweep import SweepConfig, run_sweep
"""
from evit_export.sweep.run import SweepConfig, plan_cells, run_sweep

__all__ = ["SweepConfig", "plan_cells", "run_sweep"]
