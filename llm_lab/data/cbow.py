"""CBoW examples: (context words → centre word), as in word2vec (Mikolov et al. 2013a, §3.1).

Per epoch, as the original C tool does:
1. *Subsample* frequent words: keep a token of relative frequency f with probability
   (sqrt(f/t) + 1) · t/f (Mikolov et al. 2013b, §2.3, in the form word2vec.c uses), so "the" and
   "of" stop dominating the updates.
2. *Dynamic window*: each centre draws b ∈ [1, window] and sees b words on either side, which
   weights near words more than far ones.
Contexts never cross a document boundary. Each batch is built with numpy in one vectorised pass,
in a background thread a few batches ahead of training (:func:`prefetched`): the second core
prepares the next batch while the first trains on this one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from queue import Empty, Full, Queue
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from llm_lab.data.corpus import Corpus
from llm_lab.data.resumable import rank_and_world
from llm_lab.data.text import TextDataModule
from llm_lab.errors import ArgumentError
from llm_lab.tokenizers.base import Tokenizer
from llm_lab.tokenizers.simple import ENDOFTEXT, UNK, Vocabulary

T = TypeVar("T")


def prefetched(items: Iterator[T], depth: int = 4) -> Iterator[T]:
    """The items of ``items``, computed in a background thread up to ``depth`` ahead.

    numpy and torch release the GIL inside their array operations, so building the next batch
    overlaps the training step on this one. An error in the thread is raised here; closing this
    iterator (an epoch cut short) stops the thread, and so does the end of the program: the thread
    is not a daemon (a daemon still inside torch when the interpreter shuts down aborts the process,
    "terminate called without an active exception"), and it stops once the main thread has.
    """
    queue: Queue[tuple[str, Any]] = Queue(maxsize=depth)
    stop = threading.Event()
    main = threading.main_thread()

    def stopped() -> bool:
        return stop.is_set() or not main.is_alive()

    def put(kind: str, value: Any) -> None:
        while not stopped():
            try:
                queue.put((kind, value), timeout=0.1)
                return
            except Full:
                continue

    def produce() -> None:
        try:
            for item in items:
                if stopped():
                    return
                put("item", item)
            put("end", None)
        except BaseException as err:  # handed to the consumer, raised there
            put("error", err)

    thread = threading.Thread(target=produce, name="cbow-batches")
    thread.start()
    try:
        while True:
            try:
                kind, value = queue.get(timeout=0.1)
            except Empty:
                if not thread.is_alive():
                    raise RuntimeError("the batch thread stopped without a word") from None
                continue
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


def keep_probabilities(counts: Sequence[int], sample: float) -> np.ndarray:
    """Probability of keeping each vocabulary id under frequent-word subsampling (``sample`` = t)."""
    counts_arr = np.asarray(counts, dtype=np.float64)
    if sample <= 0:
        return np.ones_like(counts_arr)
    freq = counts_arr / counts_arr.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = (np.sqrt(freq / sample) + 1.0) * sample / freq
    return np.nan_to_num(np.minimum(keep, 1.0), nan=1.0)


class CBoWBatches(IterableDataset):
    """An epoch of CBoW batches: ``context`` (B, 2·window), padded with ``pad_id``, and ``centre`` (B,).

    The number of batches per epoch is fixed (the expected number of kept tokens / batch size), so
    schedulers and progress bars know the epoch length; each epoch draws fresh subsampling and windows.
    """

    def __init__(
        self,
        ids: np.ndarray,
        doc_ids: np.ndarray,
        keep_prob: np.ndarray,
        window: int,
        batch_size: int,
        pad_id: int,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.ids, self.doc_ids, self.keep_prob = ids, doc_ids, keep_prob
        self.window, self.batch_size, self.pad_id = window, batch_size, pad_id
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        expected_kept = float(keep_prob[ids].sum())
        self.n_batches = max(1, int(expected_kept // batch_size))
        # How many raw corpus words one example stands for: the words/s figure counts raw words,
        # as gensim's does, so that the two can be compared.
        self.raw_words_per_example = len(ids) / max(expected_kept, 1.0)

    def __len__(self) -> int:
        return self.n_batches // rank_and_world()[1]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        return prefetched(self._batches(rng))

    def _batches(self, rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        kept = rng.random(len(self.ids)) < self.keep_prob[self.ids]
        ids, docs = self.ids[kept], self.doc_ids[kept]
        n = len(ids)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        # Exactly n_batches · batch_size centres: np.resize cycles when subsampling kept fewer
        # tokens than expected and truncates when it kept more.
        order = np.resize(order, self.n_batches * self.batch_size)
        offsets = np.concatenate([np.arange(-self.window, 0), np.arange(1, self.window + 1)])
        # Under DDP each rank takes every world-th batch of the same epoch: each example is seen by
        # exactly one rank, and every rank runs the same number of steps.
        rank, world = rank_and_world()
        starts = range(rank * self.batch_size, len(self) * world * self.batch_size, world * self.batch_size)
        for start in starts:
            centre = order[start : start + self.batch_size]
            reach = rng.integers(1, self.window + 1, size=len(centre))
            pos = centre[:, None] + offsets[None, :]
            valid = (np.abs(offsets)[None, :] <= reach[:, None]) & (pos >= 0) & (pos < n)
            pos = np.clip(pos, 0, n - 1)
            valid &= docs[pos] == docs[centre][:, None]
            context = np.where(valid, ids[pos], self.pad_id)
            yield torch.from_numpy(context), torch.from_numpy(ids[centre])


class CBoWDataModule(TextDataModule):
    """Corpus → the run's tokenizer → CBoW vocabulary → CBoW batches.

    The tokenizer (regex words, or BPE for the "BPE + CBoW" pipeline) cuts the text; CBoW keeps its
    own vocabulary of the tokens seen at least ``min_count`` times in the training documents (at
    most ``max_vocab_size``, special tokens left out), as word2vec's ``min_count`` does. Tokens
    outside it are dropped before windowing, so they neither act as centres nor fill context slots.
    """

    def __init__(
        self,
        corpus: Corpus,
        tokenizer: Tokenizer,
        window: int = 5,
        min_count: int = 5,
        max_vocab_size: int | None = None,
        subsample: float = 1e-3,
        batch_size: int = 1024,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(corpus, tokenizer, batch_size, num_workers, seed)
        if window < 1:
            raise ArgumentError("window", f"window={window} < 1", "use 1 or more words per side")
        if num_workers > 0:
            raise ArgumentError(
                "num_workers",
                f"{num_workers}: CBoW builds whole batches with numpy in the main process",
                "use 0 (worker processes would each repeat the epoch)",
            )
        if subsample < 0:
            raise ArgumentError("subsample", f"{subsample} < 0", "use 0 (off) or e.g. 1e-3")
        self.window = window
        self.min_count = min_count
        self.max_vocab_size = max_vocab_size
        self.subsample = subsample
        specials = (tokenizer.token_to_id(t) for t in (UNK, ENDOFTEXT))
        self.special_ids = {i for i in specials if i is not None}

    def tokenize(self, doc: str) -> list[str]:
        """The tokens of one document as strings (BPE tokens as GPT-2 prints them: "Ġthe")."""
        name = self.tokenizer.id_to_token
        return [name(i) for i in self.tokenizer.encode(doc) if i not in self.special_ids]

    def build(self) -> None:
        # CBoW draws its epochs from whole arrays in memory: a word2vec-sized corpus fits.
        split = self.corpus.load()
        train_tokens = [self.tokenize(d) for d in split.train]
        self.vocab = Vocabulary.from_tokens(
            (t for doc in train_tokens for t in doc), self.min_count, self.max_vocab_size
        )
        keep = keep_probabilities(self.vocab.counts, self.subsample)
        pad_id = len(self.vocab)
        self.train_set = CBoWBatches(
            *self._encode(train_tokens), keep, self.window, self.batch_size, pad_id, self.seed
        )
        val_ids = self._encode([self.tokenize(d) for d in split.val])
        # Validation sees every token (no subsampling) in a fixed order, so val/loss is comparable.
        self.val_set = CBoWBatches(
            *val_ids,
            np.ones(len(self.vocab)),
            self.window,
            self.batch_size,
            pad_id,
            self.seed,
            shuffle=False,
        )

    def _encode(self, docs_tokens: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        stoi = self.vocab.stoi
        ids, doc_ids = [], []
        for d, tokens in enumerate(docs_tokens):
            known = [stoi[t] for t in tokens if t in stoi]
            ids.extend(known)
            doc_ids.extend([d] * len(known))
        if len(ids) < 2 * self.window + 1:
            raise ArgumentError(
                "window",
                f"the corpus has {len(ids)} in-vocabulary tokens in a split, fewer than one window "
                f"(2·window+1 = {2 * self.window + 1})",
                "give more text or lower the window",
            )
        return np.asarray(ids, dtype=np.int64), np.asarray(doc_ids, dtype=np.int64)

    def train_dataloader(self) -> DataLoader:
        self.train_set.set_epoch(self.trainer.current_epoch if self.trainer else 0)
        return DataLoader(self.train_set, batch_size=None, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=None, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        # The corpus is split in two (train/validation): the test stage is a final report on the
        # validation documents, not a third held-out set (CBoW's word benchmarks come from outside).
        return self.val_dataloader()

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "vocab": self.vocab,
            "raw_words_per_example": self.train_set.raw_words_per_example,
            "context_size": 2 * self.window,
        }
