"""What an Optuna sweep and its trials agree on (the sweeper ``hydra_plugins/llm_lab_optuna``, the
pruning callback :mod:`llm_lab.callbacks.optuna_pruning`, and the sweep's summary and HParams view).

Kept apart from the callback, which needs Lightning and Optuna: what only reads a run folder or a
config (``generate.py``, ``evaluate.py``, the summary of a sweep) does not import them to know two
names.
"""

OPTUNA_KEY = "optuna"  # the config node the sweeper adds to every trial: storage, study, trial
PRUNED_MARKER = "PRUNED"  # a file in the run directory of a pruned trial
