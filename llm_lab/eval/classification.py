"""What a text classifier's score is worth, and how it is read: two baselines fitted on the same
training split, the per-class table, and predictions written for a file.

- the **majority** class: the accuracy of always answering the training split's most common label;
- a **bag-of-words logistic regression**: word counts (log-scaled, each text's vector of unit
  length) and one softmax layer, fitted by L-BFGS with an L2 penalty — the classic strong baseline
  for topic classification (Jurafsky & Martin, 3rd ed., ch. 4-5). A transformer that does not beat
  it has not earned its keep.

:func:`classify_file` is what ``python evaluate.py init_from=<classifier run> tasks=[new.csv]`` runs.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from llm_lab.data.classify import pad_batch
from llm_lab.errors import DataError
from llm_lab.models.classifier import GPTClassifier
from llm_lab.tokenizers.base import Tokenizer
from llm_lab.tokenizers.simple import ENDOFTEXT

WORD = re.compile(r"\w+")


def majority_accuracy(train_labels: Sequence[int], test_labels: Sequence[int]) -> float:
    """The test accuracy of always predicting the most common training label."""
    majority = Counter(train_labels).most_common(1)[0][0]
    return sum(label == majority for label in test_labels) / len(test_labels)


class BagOfWords:
    """Multinomial logistic regression on the words of a text (lower-cased ``\\w+``), the
    ``max_words`` most frequent of the training texts."""

    def __init__(
        self,
        texts: Sequence[str],
        labels: Sequence[int],
        n_classes: int,
        l2: float = 1e-4,
        max_words: int = 20000,
    ) -> None:
        counts = Counter(w for text in texts for w in set(WORD.findall(text.lower())))
        self.vocab = {w: i for i, (w, _) in enumerate(counts.most_common(max_words))}
        with torch.inference_mode(False):
            x, y = self.features(texts), torch.tensor(list(labels))
            self.weight = torch.zeros(len(self.vocab), n_classes, requires_grad=True)
            self.bias = torch.zeros(n_classes, requires_grad=True)
        optimizer = torch.optim.LBFGS([self.weight, self.bias], max_iter=100, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = (
                F.cross_entropy(torch.sparse.mm(x, self.weight) + self.bias, y)
                + l2 * self.weight.square().sum()
            )
            loss.backward()
            return loss

        with torch.inference_mode(False), torch.enable_grad():  # also when called from a test loop
            optimizer.step(closure)

    def features(self, texts: Sequence[str]) -> Tensor:
        """(texts, words), sparse: 1 + log(count) of each known word, each row of unit length."""
        rows, columns, values = [], [], []
        for row, text in enumerate(texts):
            for word, n in Counter(WORD.findall(text.lower())).items():
                if word in self.vocab:
                    rows.append(row)
                    columns.append(self.vocab[word])
                    values.append(1.0 + math.log(n))
        weights, where = torch.tensor(values), torch.tensor(rows, dtype=torch.long)
        norms = torch.zeros(len(texts)).index_add_(0, where, weights.square()).sqrt().clamp(min=1e-12)
        # Sparse: a text holds a dozen of the thousands of words, and the products skip the zeros.
        indices = torch.tensor([rows, columns], dtype=torch.long).reshape(2, -1)
        return torch.sparse_coo_tensor(
            indices, weights / norms[where], (len(texts), len(self.vocab)), check_invariants=False
        )

    @torch.no_grad()
    def predict(self, texts: Sequence[str]) -> Tensor:
        return (torch.sparse.mm(self.features(texts), self.weight) + self.bias).argmax(-1)


def bag_of_words_accuracy(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    test_texts: Sequence[str],
    test_labels: Sequence[int],
    n_classes: int,
) -> float:
    """The test accuracy of :class:`BagOfWords` fitted on the training split."""
    model = BagOfWords(train_texts, train_labels, n_classes)
    return float((model.predict(test_texts) == torch.tensor(list(test_labels))).float().mean())


def per_class_table(confusion: Tensor, labels: Sequence[str]) -> str:
    """A Markdown table of precision, recall, F1 and support per class, from a confusion matrix
    whose rows are the true classes and columns the predicted ones."""
    confusion = confusion.double()
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for i, label in enumerate(labels):
        tp, predicted, support = confusion[i, i], confusion[:, i].sum(), confusion[i].sum()
        precision = float(tp / predicted) if predicted else 0.0
        recall = float(tp / support) if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        lines.append(f"| {label} | {precision:.3f} | {recall:.3f} | {f1:.3f} | {int(support)} |")
    return "\n".join(lines)


@torch.no_grad()
def predict(
    net: GPTClassifier, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 16, device: str = "cpu"
) -> Tensor:
    """Class probabilities (texts, classes), each text cut to the model's context."""
    net = net.eval().to(device)
    pad = tokenizer.token_to_id(ENDOFTEXT) or 0
    encoded = [(tokenizer.encode(text)[: net.config.context_length], 0) for text in texts]
    probabilities = []
    for start in range(0, len(encoded), batch_size):
        ids, lengths, _ = pad_batch(encoded[start : start + batch_size], pad)
        probabilities.append(net(ids.to(device), lengths.to(device)).float().softmax(-1).cpu())
    return torch.cat(probabilities)


def classify_file(
    net: GPTClassifier,
    tokenizer: Tokenizer,
    labels: Sequence[str],
    rows: Sequence[tuple[str, str]],
    batch_size: int = 16,
    device: str = "cpu",
) -> tuple[list[dict[str, object]], dict[str, float]]:
    """Each text with its predicted label and one probability per class; and, when the rows have
    labels, the accuracy and macro-F1 (a label the classifier does not know is a DataError)."""
    probabilities = predict(net, tokenizer, [text for text, _ in rows], batch_size, device)
    predicted = probabilities.argmax(-1)
    table = [
        {
            "text": text,
            "prediction": labels[int(p)],
            **{f"p_{label}": float(q) for label, q in zip(labels, row, strict=True)},
        }
        for (text, _), p, row in zip(rows, predicted, probabilities, strict=True)
    ]
    metrics: dict[str, float] = {"n": float(len(rows))}
    if all(label for _, label in rows):
        unknown = sorted({label for _, label in rows} - set(labels))
        if unknown:
            raise DataError(f"label {unknown[0]!r} is not one the classifier knows ({', '.join(labels)})")
        target = torch.tensor([list(labels).index(label) for _, label in rows])
        metrics["acc"] = float(multiclass_accuracy(predicted, target, len(labels), average="micro"))
        metrics["f1_macro"] = float(multiclass_f1_score(predicted, target, len(labels), average="macro"))
    return table, metrics
