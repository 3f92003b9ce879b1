"""The application layer: the only code that knows about the command line, exit codes, signals and
Hydra's internals (see ``/work/shared/DESIGN.md``, "The front door").

- :mod:`~llm_lab.app.shell` runs an entry point: prints ``error:`` lines, picks the exit code (0 done,
  2 bad input, 130/143 interrupted, 1 a bug with its traceback), installs the signal handlers once,
  writes the FAILED marker and the resume hint, and reports a sweep's outcome.
- :mod:`~llm_lab.app.preflight` checks a composed config before anything heavy starts and reports
  every problem at once, as (key, problem, fix).
- :mod:`~llm_lab.app.run_folder` claims, locks and finds the run folders a command writes to.
- :mod:`~llm_lab.app.overrides` reads and writes Hydra's command-line syntax.
- :mod:`~llm_lab.app.sweeps` are the Hydra callbacks of ``-m`` sweeps and their summary.

Importing this package is light (no torch, no Lightning): ``train.py`` imports the shell first, so that
Ctrl-C during its heavy imports is already one line.
"""
