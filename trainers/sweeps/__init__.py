"""Hyper-parameter sweeps on Optuna: the search space, the study and its workers, the summary."""
