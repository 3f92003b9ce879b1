"""Score a model: ``python evaluate.py init_from=<run folder or HF folder> tasks=[bpb,docs_mc,docs_cloze]``.

The flow: load the model named by ``init_from`` with its tokenizer and training corpus
(:func:`llm_lab.eval.load.load_model`, everything read as data), run each task
(:class:`llm_lab.eval.tasks.Evaluation`), write ``results.json`` and ``report.md`` into the run
folder (``hydra.run.dir``) and print the table, each metric beside its baseline. Bad input is one
``error:`` line naming the key or file, exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from llm_lab.config import (
    Setting,
    as_config_error,
    check_command_line,
    check_settings,
    register_resolvers,
    run_cli,
)
from llm_lab.errors import ArgumentError, ConfigError, LabError
from llm_lab.eval.load import load_model
from llm_lab.eval.report import Results, format_table, write_results
from llm_lab.eval.scoring import LabLM, Scorer
from llm_lab.eval.tasks import Evaluation, task_name

CONF = Path(__file__).resolve().parent / "conf"
register_resolvers()

SETTINGS = {
    "stride": Setting("int | None", "e.g. stride=256, or null for the model's window", at_least=1),
    "batch_size": Setting("int", "e.g. batch_size=16", at_least=1),
    "limit": Setting("int | None", "e.g. limit=100, or null for every item", at_least=1),
    "torch_threads": Setting("int | None", "e.g. torch_threads=1", at_least=1),
}


def check_config(cfg: DictConfig) -> None:
    """Every problem of the keys themselves, before anything is loaded."""
    check_command_line(cfg)
    check_settings(cfg, SETTINGS)
    if cfg.init_from is None:
        raise ConfigError(
            "init_from", "needs a value", "init_from=outputs/gpt/runs/<time>, or a Hugging Face folder"
        )
    tasks = OmegaConf.to_container(cfg.tasks) if OmegaConf.is_list(cfg.tasks) else None
    if not tasks or not all(isinstance(task, str) for task in tasks):
        raise ConfigError("tasks", f"{cfg.tasks!r} is not a list of task names", "e.g. tasks=[bpb,docs_mc]")
    try:
        device = torch.device(str(cfg.device))
    except RuntimeError:
        raise ConfigError("device", f"{cfg.device!r} is not a device", "cpu, cuda, cuda:1 or mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise ConfigError("device", f"this machine has no {device.type} device", "device=cpu")


def evaluate(cfg: DictConfig) -> Results:
    """The metrics of every task in ``cfg.tasks``, written to the run folder."""
    check_config(cfg)
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    loaded = load_model(cfg.init_from, cfg.tokenizer_path)
    with tqdm(unit=" rows", file=sys.stderr, disable=None) as bar:
        scorer = Scorer(
            LabLM(loaded.net.to(cfg.device)), loaded.tokenizer, cfg.batch_size, cfg.device, bar.update
        )
        evaluation = Evaluation(scorer, loaded.corpus, cfg.stride, cfg.limit)
        results: Results = {}
        for spec in cfg.tasks:
            bar.set_description(task_name(spec))
            results[task_name(spec)] = evaluation.run(spec)
    settings = {key: cfg[key] for key in ("init_from", "tasks", "stride", "limit")}
    write_results(Path(HydraConfig.get().runtime.output_dir), results, str(cfg.init_from), settings)
    return results


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="evaluate")
def main(cfg: DictConfig) -> Any:
    try:
        results = evaluate(cfg)
    except (LabError, ArgumentError) as err:
        if isinstance(err, ArgumentError):
            err = as_config_error(err, cfg)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(format_table(results))
    print(f"results: {Path(HydraConfig.get().runtime.output_dir) / 'results.json'}  (and report.md)")
    return results


def cli() -> None:
    """``python evaluate.py [key=value ...]``."""
    run_cli(main, CONF, "evaluate")


if __name__ == "__main__":
    cli()
