"""Attention heatmaps in TensorBoard: what each head of the model looks at in a probe sentence.

Every ``every_n_steps`` training steps the probe is run through the model with the attention
layers keeping their weights (``attention_weights``, see ``llm_lab.nn.attention``), and each head's
(T, T) weights are drawn as an image: rows are queries, columns keys, darker = more attention
(Raschka, ch. 3.3-3.5 prints these matrices as numbers; Vaswani et al. 2017, Fig. 3-5 draw them),
under the tag ``maps/<layer>/head_<h>``.

The image is drawn with numpy; the token labels with Pillow, which TensorBoard itself depends on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from llm_lab.errors import ArgumentError
from llm_lab.nn.attention import attention_weights

# Sequential colour map from white (no attention) to dark blue (all of it): one hue, so brightness
# alone reads as weight, and it prints well in grey.
_LOW = np.array([255.0, 255.0, 255.0])
_HIGH = np.array([8.0, 48.0, 107.0])
_TEXT = (40, 40, 40)


def colourise(weights: np.ndarray) -> np.ndarray:
    """(T_q, T_k) weights in [0, 1] → (T_q, T_k, 3) uint8 colours, linear from white to blue."""
    w = np.clip(weights, 0.0, 1.0)[..., None]
    return ((1.0 - w) * _LOW + w * _HIGH).round().astype(np.uint8)


def _text_width(font: Any, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def _vertical(text: str, font: Any, height: int) -> Image.Image:
    """``text`` on a strip turned a quarter, to read bottom-up (``height`` is the strip's width)."""
    strip = Image.new("RGB", (height, 14), "white")
    ImageDraw.Draw(strip).text((height - 3 - _text_width(font, text), 1), text, fill=_TEXT, font=font)
    return strip.rotate(90, expand=True)


def heatmap_image(weights: np.ndarray, labels: Sequence[str], cell: int = 18) -> np.ndarray:
    """Draw (T, T) attention weights with token labels as an (H, W, 3) uint8 image.

    Each row (one query's distribution over keys) is scaled by its own maximum, so the darkest
    cell of a row is where that query looks most, even in long rows where every weight is small
    (under a causal mask the first row is always a single 1.0 that would otherwise wash out the
    rest). Query labels run down the left under the axis name "query", key labels (rotated) along
    the top under "key"; a colour bar on the right reads a shade as a share of the row's maximum.
    """
    t_query, t_key = weights.shape
    if len(labels) != t_key or t_query != t_key:
        raise ValueError(
            f"need a square matrix and one label per token, got {weights.shape} and {len(labels)} labels"
        )
    font = ImageFont.load_default()
    margin = max((_text_width(font, s) for s in labels), default=0) + 6
    axis = 16  # the band holding an axis name
    left, top = axis + margin, axis + margin  # where the cells start
    peak = weights.max(axis=1, keepdims=True)
    scaled = np.divide(weights, peak, out=np.zeros_like(weights, dtype=float), where=peak > 0)
    cells = colourise(scaled).repeat(cell, axis=0).repeat(cell, axis=1)
    grid_h = t_query * cell
    bar_x = left + t_key * cell + 12
    bar_w = 12
    ticks = ("1", "0.5", "0")  # of the row's maximum, as the caption beside them says
    width = bar_x + bar_w + 6 + max(_text_width(font, t) for t in ticks) + axis + 4
    canvas = Image.new("RGB", (width, max(top + grid_h, top + 60) + 4), "white")
    canvas.paste(Image.fromarray(cells), (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((left + (t_key * cell - _text_width(font, "key")) // 2, 2), "key", fill=_TEXT, font=font)
    canvas.paste(_vertical("query", font, grid_h), (2, top))
    for i, label in enumerate(labels):
        draw.text((axis + 2, top + i * cell + cell // 4), label, fill=_TEXT, font=font)
        # Key labels: written horizontally on a strip, then turned a quarter to read bottom-up.
        canvas.paste(_vertical(label, font, margin), (left + i * cell + (cell - 14) // 2, axis))
    # The colour bar: the row-scaled weight from 1 (top) down to 0, ticked at both ends and the middle.
    shades = colourise(np.linspace(1.0, 0.0, grid_h)[:, None]).repeat(bar_w, axis=1)
    canvas.paste(Image.fromarray(shades), (bar_x, top))
    draw.rectangle((bar_x, top, bar_x + bar_w - 1, top + grid_h - 1), outline=_TEXT)
    for text, y in zip(ticks, (top, top + grid_h // 2 - 5, top + grid_h - 11), strict=True):
        draw.text((bar_x + bar_w + 4, y), text, fill=_TEXT, font=font)
    canvas.paste(_vertical("attention / row max", font, grid_h), (width - axis, top))
    return np.asarray(canvas)


class AttentionMaps(L.Callback):
    """Log one heatmap per attention layer and head of a fixed probe sentence to TensorBoard.

    The LightningModule must have the run's ``tokenizer`` and a ``net`` taking ids (B, T).
    """

    def __init__(
        self,
        probe: str = "The function returns a list of the values in the class.",
        every_n_steps: int = 200,
        max_tokens: int = 24,
        cell: int = 18,
    ) -> None:
        if every_n_steps < 1:
            raise ArgumentError(
                "every_n_steps",
                f"{every_n_steps} < 1",
                "use a positive number of steps",
            )
        self.probe = probe
        self.every_n_steps = every_n_steps
        self.max_tokens = max_tokens
        self.cell = cell

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # global_step has already counted this batch's optimizer step.
        if trainer.global_step % self.every_n_steps == 0:
            self.log_maps(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.log_maps(trainer, pl_module)

    def probe_ids(self, tokenizer: Any, context_length: int | None) -> list[int]:
        ids = tokenizer.encode(self.probe)[: min(self.max_tokens, context_length or 10**9)]
        if not ids:
            raise ArgumentError(
                "probe",
                "the probe encodes to no tokens",
                "use a sentence with words from the corpus",
            )
        return ids

    @torch.no_grad()
    def log_maps(self, trainer: L.Trainer, pl_module: Any) -> None:
        tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tb is None or not trainer.is_global_zero:
            return
        net: nn.Module = pl_module.net
        tokenizer = pl_module.tokenizer
        ids = self.probe_ids(tokenizer, getattr(net, "context_length", None))
        labels = [tokenizer.decode([i]).strip()[:10] for i in ids]
        was_training = net.training
        net.eval()
        try:
            with attention_weights(net) as maps:
                net(torch.tensor([ids], device=pl_module.device))
        finally:
            net.train(was_training)
        for name, weights in maps.items():
            heads = weights[0] if weights.dim() == 4 else weights  # (H, T, T)
            for h, head in enumerate(heads.float().cpu().numpy()):
                image = heatmap_image(head, labels, self.cell)
                # Under maps/: TensorBoard opens its first two tag groups by name, loss/ and lr/.
                tb.experiment.add_image(
                    f"maps/{name}/head_{h}", image, trainer.global_step, dataformats="HWC"
                )
