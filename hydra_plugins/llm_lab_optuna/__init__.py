"""llm_lab's Optuna sweeper for Hydra (``hydra/sweeper=llm_lab_optuna``), built on current Optuna.

Hydra finds plugins by importing every module of the ``hydra_plugins`` namespace package (which
therefore has no ``__init__.py``); importing :mod:`.optuna_sweeper` registers its config.
"""
