"""Shared test helpers: the repo root, the reference fixtures, and running train.py in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"
FIXTURES = REFERENCE / "cs336-fixtures"


def needs_fixtures() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not FIXTURES.is_dir(),
        reason=f"reference fixtures not found at {FIXTURES} (no ../shared beside this clone)",
    )


def run_train(
    *overrides: str, script: str = "train.py", timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python train.py OVERRIDES`` from the repo root, as a user would."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0")
    return subprocess.run(
        [sys.executable, script, *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
