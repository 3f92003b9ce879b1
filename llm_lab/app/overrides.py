"""Hydra's command-line syntax, both ways: a value written so that Hydra reads it back equal, and one
line for a command line Hydra cannot compose (an unknown key with the closest valid one, a key that
moved with its new place, an unknown group option with the valid ones)."""

from __future__ import annotations

import difflib
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from llm_lab.config import leaf_keys
from llm_lab.errors import LabError

# Keys that moved, with their new place: a command line that still uses one is told where it went.
MOVED = {
    "trainer.gradient_clip_backend": "gradient_clip_backend",
    "trainer.float32_matmul_precision": "float32_matmul_precision",
    # Where the text comes from is the corpus group's; the data group batches it.
    **{
        f"data.{key}": f"corpus.{key}"
        for key in (
            "path",
            "hf_dataset",
            "hf_config",
            "hf_split",
            "hf_data_files",
            "hf_streaming",
            "text_column",
            "max_documents",
            "val_fraction",
        )
    },
}

# Strings Hydra reads back unchanged without quotes (not null/true/false/inf/nan, nor a number
# such as .5): words and plain paths.
_BARE = re.compile(r"(?:[A-Za-z_/]|\.(?![0-9]))[A-Za-z0-9_\-./]*")
_LITERALS = {"null", "true", "false", "inf", "nan"}


def format_value(value: Any) -> str:
    """A value as the right-hand side of a Hydra override, such that Hydra parses it back equal
    (a path with a space, a comma or a quote is quoted, and escaped where it must be)."""
    from hydra.core.override_parser.types import Quote, QuotedString

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        if _BARE.fullmatch(value) and value.lower() not in _LITERALS:
            return value
        return QuotedString(text=value, quote=Quote.single).with_quotes()
    raise TypeError(f"cannot write {value!r} as an override value")


def command_word(key: str, value: Any) -> str:
    """``key=value`` as one word a user can paste into a shell: Hydra reads back ``value``."""
    return shlex.quote(f"{key}={format_value(value)}")


def _unknown_keys(
    first: str, overrides: Sequence[str], config_dir: Path, config_name: str
) -> tuple[list[str], list[str]]:
    """Every key of ``overrides`` the config does not have (Hydra stops at the first), and the keys
    it does have (composed without the unknown ones), for the closest match."""
    from hydra import compose, initialize_config_dir

    unknown, kept = [first], list(overrides)
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        while True:
            kept = [o for o in kept if o.split("=", 1)[0].lstrip("+~") not in unknown]
            try:
                return unknown, leaf_keys(compose(config_name, overrides=kept))
            except Exception as again:  # noqa: BLE001 - another unknown key, or give up
                more = re.search(r"Could not override '([^']+)'", str(again))
                if more is None or more.group(1) in unknown:
                    return unknown, []
                unknown.append(more.group(1))


def composition_error(err: Exception, overrides: Sequence[str], config_dir: Path, config_name: str) -> str:
    """One line for a command line Hydra cannot compose: an unknown key with the closest valid one
    (Hydra's own advice, ``+key=value``, would add a key nothing reads), a moved key with its new
    place, an unknown group option with the valid ones, or the parser's message."""
    text = str(err)
    unknown_key = re.search(r"Could not override '([^']+)'", text)
    if unknown_key:
        key = unknown_key.group(1)
        unknown, keys = _unknown_keys(key, overrides, config_dir, config_name)
        moved = [k for k in unknown if k in MOVED]
        if moved:  # every moved key with its new place (the unknown ones come after)
            rest = [k for k in unknown if k not in MOVED]
            tail = f"; {', '.join(rest)}: no such config key" if rest else ""
            return "; ".join(f"{k}: moved to {MOVED[k]} (use {MOVED[k]}=...)" for k in moved) + tail
        others = f"; {', '.join(unknown[1:])}: no such config key either" if unknown[1:] else ""
        if f"~{key}" in overrides:  # deleted, then set: the order of the words matters
            return f"{key}: removed by ~{key} before it is set (leave one of the two out){others}"
        group, _, sub = key.partition(".")
        owners = [
            option.stem
            for option in sorted((config_dir / group).glob("*.yaml"))
            if sub and OmegaConf.select(OmegaConf.load(option), sub) is not None
        ]
        if owners:  # a setting of another option of the group (tokenizer.min_count of simple)
            of = " or ".join(f"{group}={owner}" for owner in owners)
            fix = "(choose that, or leave it out)"
            return f"{key}: not a setting of the {group} chosen, but of {of} {fix}{others}"
        near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]}?" if near else f"list the keys with: python {sys.argv[0]} --cfg job"
        return f"{key}: no such config key ({hint}){others}"
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        return f"{group}={option}: no such option (one of: {', '.join(options)})"
    unreadable = _unparsable(overrides)
    if unreadable is not None:
        from hydra.core.override_parser.types import Quote, QuotedString

        def quote(text: str) -> str:
            return QuotedString(text=text, quote=Quote.double).with_quotes()

        name, _, value = unreadable.partition("=")
        if value.startswith("[") and value.endswith("]"):  # a list: each element quoted
            value_text = "[" + ",".join(quote(e.strip()) for e in value[1:-1].split(",") if e.strip()) + "]"
        else:
            value_text = quote(value)
        quoted = shlex.quote(f"{name}={value_text}")
        return (
            f"{name.lstrip('+~')}: Hydra's override grammar cannot read the value {value!r} as "
            f"written (quote the value: {quoted})"
        )
    return " ".join(text.split())


def _unparsable(overrides: Sequence[str]) -> str | None:
    """The first ``key=value`` word Hydra's override parser refuses (brackets, parentheses, quotes
    or control characters in an unquoted value), or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for word in overrides:
        try:
            parser.parse_overrides([word])
        except OverrideParseException:
            return word if "=" in word else None
    return None


def plugin_error(err: Exception) -> str:
    """One line for an object Hydra could not build for itself (the Optuna sweeper's sampler): the
    lab's own error when one is the cause, else the key Hydra names (``full_key: hydra.sweeper.pruner``)
    and the library's words."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, LabError):
        cause = cause.__cause__
    if cause is not None:
        return str(cause)
    text = str(err)
    key = re.search(r"full_key: (\S+)", text)
    where = key.group(1) if key else "config"
    # Hydra's own text is several lines ("Error in call to target ...:", the cause, the key).
    problem = str(err.__cause__).strip() if err.__cause__ is not None else text.split("\n")[0]
    problem = problem or text.split("\n")[0]
    return f"{where}: {' '.join(problem.split())} (check the {where}.* values)"
