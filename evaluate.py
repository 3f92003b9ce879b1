"""Score a model: ``python evaluate.py init_from=<run folder or HF folder> tasks=[bpb,docs_mc,docs_cloze]``.

The flow: check the config, load the model named by ``init_from`` with its tokenizer and training
corpus (:func:`llm_lab.models.pretrained.load_model`, everything read as data), run each task
(:class:`llm_lab.eval.tasks.Evaluation`), write ``results.json`` and ``report.md`` into the run
folder (``hydra.run.dir``) and print the table, each metric beside its baseline. The shell
(:mod:`llm_lab.app.shell`) turns bad input into one ``error:`` line naming the key or file, exit 2.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from llm_lab.app.shell import entry_point, starting

with starting():  # Ctrl-C while torch loads is one line too
    import torch
    from omegaconf import DictConfig, OmegaConf
    from tqdm import tqdm

    from llm_lab.app.preflight import Setting, device_problems, earlier_run_problems, preflight
    from llm_lab.app.resolvers import register_resolvers
    from llm_lab.app.run_folder import resolve_earlier_runs
    from llm_lab.atomic import replacing
    from llm_lab.config import keyed, plain
    from llm_lab.data.labelled import read_labelled
    from llm_lab.errors import ArgumentError, ConfigError
    from llm_lab.eval.report import Results, format_table, write_results
    from llm_lab.eval.scoring import LabLM, Scorer
    from llm_lab.eval.tasks import Evaluation, task_name
    from llm_lab.models.classifier import GPTClassifier
    from llm_lab.models.pretrained import Loaded, load_model

register_resolvers()  # conf/paths' ${cwd:}

SETTINGS = {
    "stride": Setting("int | None", "e.g. stride=256, or null for the model's window", at_least=1),
    "batch_size": Setting("int", "e.g. batch_size=16", at_least=1),
    "limit": Setting("int | None", "e.g. limit=100, or null for every item", at_least=1),
    "torch_threads": Setting("int | None", "e.g. torch_threads=1", at_least=1),
    "text_column": Setting("str | int | None", "a classifier's text column, e.g. text_column=text"),
    "label_column": Setting("str | int | None", "a classifier's label column, e.g. label_column=label"),
}


def model_and_task_problems(cfg: DictConfig) -> list[ConfigError]:
    """A missing model, a task list that is not one."""
    problems = []
    if cfg.init_from is None:
        fix = "init_from=outputs/gpt/runs/<time>, or a Hugging Face folder"
        problems.append(ConfigError("init_from", "needs a value", fix))
    tasks = OmegaConf.to_container(cfg.tasks) if OmegaConf.is_list(cfg.tasks) else None
    if not tasks or not all(isinstance(task, str) for task in tasks):
        fix = "e.g. tasks=[bpb,docs_mc]"
        problems.append(ConfigError("tasks", f"{cfg.tasks!r} is not a list of task names", fix))
    return problems


def evaluate(cfg: DictConfig) -> Results:
    """The metrics of every task in ``cfg.tasks``, written to the run folder."""
    preflight(cfg, SETTINGS, checks=[model_and_task_problems, device_problems, earlier_run_problems])
    resolve_earlier_runs(cfg)  # init_from=gpt: the newest finished run of experiment=gpt
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    loaded = load_model(cfg.init_from, cfg.tokenizer_path)
    if isinstance(loaded.net, GPTClassifier):  # a classifier run: predictions for each file
        return classify(cfg, loaded)
    with tqdm(unit=" rows", file=sys.stderr, disable=None) as bar:  # no bar when not a terminal
        model = LabLM(loaded.net.to(cfg.device))
        scorer = Scorer(
            model, loaded.tokenizer, cfg.batch_size, cfg.device, bar.update, start_token=loaded.start_token
        )
        hub = {
            "hub_split": cfg.hub_split,
            "hub_config": cfg.hub_config,
            "hub_columns": plain(cfg.hub_columns),
        }
        with keyed(cfg, cfg):
            evaluation = Evaluation(scorer, loaded.corpus, cfg.stride, cfg.limit, **hub)
        results: Results = {}
        for spec in cfg.tasks:
            bar.set_description(task_name(spec))
            results[task_name(spec)] = evaluation.run(spec)
    settings = {key: cfg[key] for key in ("init_from", "tasks", "stride", "limit")}
    write_results(Path(cfg.paths.output_dir), results, str(cfg.init_from), settings)
    return results


def classify(cfg: DictConfig, loaded: Loaded) -> Results:
    """A classifier's predictions for the texts of each task file, in ``predictions.csv`` (the
    text, the predicted label, one probability column per class), and its accuracy and macro-F1
    where the file has labels; the columns are the run's unless text_column/label_column say."""
    # Imported here: torchmetrics and Lightning take seconds to load, and only a classifier needs them.
    from llm_lab.eval.classification import classify_file

    net, labels = loaded.net, loaded.labels
    assert isinstance(net, GPTClassifier) and labels is not None, "a classifier run has labels.json"
    text_column = cfg.text_column if cfg.text_column is not None else loaded.columns[0]
    label_column = cfg.label_column if cfg.label_column is not None else loaded.columns[1]
    results: Results = {}
    table: list[dict[str, object]] = []
    for spec in cfg.tasks:
        with keyed(cfg, cfg):
            try:
                rows = read_labelled(spec, text_column, label_column)
            except ArgumentError as err:  # a file of new texts, without their labels
                if err.arg != "label_column":
                    raise
                rows = read_labelled(spec, text_column, None)
        predictions, results[task_name(spec)] = classify_file(
            net, loaded.tokenizer, labels, rows, cfg.batch_size, cfg.device
        )
        table += (
            [{"task": task_name(spec), **row} for row in predictions] if len(cfg.tasks) > 1 else predictions
        )
    folder = Path(cfg.paths.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with replacing(folder / "predictions.csv") as tmp, tmp.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    settings = {key: cfg[key] for key in ("init_from", "tasks")}
    write_results(folder, results, str(cfg.init_from), settings)
    print(f"predictions: {folder / 'predictions.csv'}")
    return results


@entry_point("evaluate", run_folder=False)
def main(cfg: DictConfig) -> Results:
    """``python evaluate.py [key=value ...]``: score, write the results, print the table."""
    results = evaluate(cfg)
    print(format_table(results))
    print(f"results: {Path(cfg.paths.output_dir) / 'results.json'}  (and report.md)")
    return results


if __name__ == "__main__":
    main()
