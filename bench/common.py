"""Shared by the benchmarks: reference text, timing, and a markdown table."""

from __future__ import annotations

import bz2
import html
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

WIKI_SAMPLE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def gensim_test_data(name: str) -> Path:
    """A file of the test data gensim ships (the benchmarks' reference corpora and word lists)."""
    import gensim

    return Path(gensim.__file__).parent / "test" / "test_data" / name


def wikipedia_text() -> str:
    """Plain text of gensim's Wikipedia sample (~6 MB of XML): page texts, wiki markup stripped by regex."""
    with bz2.open(gensim_test_data(WIKI_SAMPLE), "rt", encoding="utf-8") as f:
        raw = f.read()
    text = html.unescape("\n\n".join(re.findall(r"<text[^>]*>(.*?)</text>", raw, flags=re.S)))
    text = re.sub(r"<ref[^>]*/>|<ref.*?</ref>|<[^>]+>", "", text, flags=re.S)
    for _ in range(3):  # nested templates {{...{{...}}...}}
        text = re.sub(r"\{\{[^{}]*\}\}", "", text)
    text = re.sub(r"\[\[(?:[^\[\]|]*\|)?([^\[\]]*)\]\]", r"\1", text)  # [[target|label]] → label
    text = re.sub(r"'{2,}", "", text)  # bold / italic quotes
    return re.sub(r"\n{3,}", "\n\n", text)


def median_seconds(step: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def median_ms(steps: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, float]:
    """Median wall time of each step in milliseconds, after ``warmup`` untimed rounds.

    The steps take turns within each round, so a burst of load on a shared machine slows all of
    them alike instead of skewing one column.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(warmup + repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_ >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
