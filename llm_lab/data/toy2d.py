"""Seeded 2-D toy classification sets and the DataModule that serves them.

These are the playgrounds of chapter 2 (Raschka, appendix A; Goodfellow et al. 2016, §6.1): sets
small enough to draw, chosen so that each shows one thing. ``blobs`` with two classes is linearly
separable (a perceptron learns it), ``xor`` is the classic set a single linear unit cannot learn
(Minsky & Papert 1969), and ``moons``, ``circles`` and ``spirals`` need a hidden layer with a
non-linearity. Every generator is written here with numpy, seeded, and adds isotropic Gaussian noise
of standard deviation ``noise`` to the clean points.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from llm_lab.errors import ArgumentError

# Class k of "blobs" sits on a circle of this radius, so two blobs are split by the line x0 = 0.
BLOB_RADIUS = 2.0
# XOR points are pushed this far from the axes, so that without noise the quadrants do not touch.
XOR_GAP = 0.1
# Radius of the inner ring of "circles" (the outer ring has radius 1).
CIRCLES_INNER_RADIUS = 0.5
# How many full turns each spiral arm makes from the centre to radius 1.
SPIRAL_TURNS = 1.0


def _class_sizes(n_samples: int, num_classes: int) -> list[int]:
    """Split ``n_samples`` into ``num_classes`` sizes that differ by at most one."""
    base, extra = divmod(n_samples, num_classes)
    return [base + (k < extra) for k in range(num_classes)]


def _blobs(sizes: list[int], rng: np.random.Generator) -> np.ndarray:
    """Class k is a point mass at angle 2πk/K on a circle of radius ``BLOB_RADIUS``."""
    parts = []
    for k, n in enumerate(sizes):
        angle = 2 * math.pi * k / len(sizes)
        parts.append(np.tile([BLOB_RADIUS * math.cos(angle), BLOB_RADIUS * math.sin(angle)], (n, 1)))
    return np.concatenate(parts)


def _xor(sizes: list[int], rng: np.random.Generator) -> np.ndarray:
    """Class 0 fills quadrants I and III, class 1 quadrants II and IV: y = [x0 > 0] xor [x1 > 0]."""
    parts = []
    for k, n in enumerate(sizes):
        magnitude = XOR_GAP + (1 - XOR_GAP) * rng.random((n, 2))
        sign0 = rng.choice([-1.0, 1.0], size=n)
        # Same signs for class 0, opposite signs for class 1.
        sign1 = sign0 if k == 0 else -sign0
        parts.append(magnitude * np.stack([sign0, sign1], axis=1))
    return np.concatenate(parts)


def _moons(sizes: list[int], rng: np.random.Generator) -> np.ndarray:
    """Two interleaved unit half circles: the upper centred at (0, 0), the lower at (1, 0.5)."""
    t0 = rng.uniform(0, math.pi, sizes[0])
    t1 = rng.uniform(0, math.pi, sizes[1])
    upper = np.stack([np.cos(t0), np.sin(t0)], axis=1)
    lower = np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
    return np.concatenate([upper, lower])


def _circles(sizes: list[int], rng: np.random.Generator) -> np.ndarray:
    """Class 0 on the unit circle, class 1 on a circle of radius ``CIRCLES_INNER_RADIUS``."""
    parts = []
    for radius, n in zip((1.0, CIRCLES_INNER_RADIUS), sizes, strict=True):
        t = rng.uniform(0, 2 * math.pi, n)
        parts.append(radius * np.stack([np.cos(t), np.sin(t)], axis=1))
    return np.concatenate(parts)


def _spirals(sizes: list[int], rng: np.random.Generator) -> np.ndarray:
    """K arms θ = 2πk/K + 2π·turns·r, r ∈ (0, 1], points spread uniformly along r."""
    parts = []
    for k, n in enumerate(sizes):
        r = rng.uniform(0.05, 1.0, n)
        theta = 2 * math.pi * k / len(sizes) + 2 * math.pi * SPIRAL_TURNS * r
        parts.append(r[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1))
    return np.concatenate(parts)


# name -> (generator, fixed number of classes or None when ``num_classes`` is free)
GENERATORS: dict[str, tuple[Callable[[list[int], np.random.Generator], np.ndarray], int | None]] = {
    "blobs": (_blobs, None),
    "xor": (_xor, 2),
    "moons": (_moons, 2),
    "circles": (_circles, 2),
    "spirals": (_spirals, None),
}


def make_toy2d(
    name: str, n_samples: int = 400, noise: float = 0.1, seed: int = 0, num_classes: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a shuffled 2-D classification set.

    Returns ``(x, y)``: float32 points of shape (N, 2) and int64 labels in ``[0, num_classes)``, the
    classes as balanced as N allows. The same arguments always give the same arrays.
    """
    if name not in GENERATORS:
        raise ArgumentError("name", f"unknown 2-D set {name!r}", f"choose one of {sorted(GENERATORS)}")
    generator, fixed_classes = GENERATORS[name]
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ArgumentError("n_samples", f"must be a positive integer, got {n_samples!r}", "e.g. 200")
    if not math.isfinite(noise) or noise < 0:
        raise ArgumentError("noise", f"must be a finite number >= 0, got {noise!r}", "e.g. 0.1")
    if fixed_classes is not None and num_classes != fixed_classes:
        raise ArgumentError(
            "num_classes",
            f"{name!r} always has {fixed_classes} classes, got {num_classes}",
            f"set num_classes={fixed_classes} or use blobs/spirals",
        )
    if num_classes < 2:
        raise ArgumentError("num_classes", f"need at least 2 classes, got {num_classes}", "use 2 or more")

    rng = np.random.default_rng(seed)
    sizes = _class_sizes(n_samples, num_classes)
    x = generator(sizes, rng) + noise * rng.standard_normal((n_samples, 2))
    y = np.repeat(np.arange(num_classes), sizes)
    order = rng.permutation(n_samples)
    return x[order].astype(np.float32), y[order].astype(np.int64)


class Toy2DDataModule(L.LightningDataModule):
    """Serves one generated 2-D set as a shuffled train split and a fixed validation split."""

    def __init__(
        self,
        name: str = "moons",
        n_samples: int = 400,
        noise: float = 0.1,
        num_classes: int = 2,
        val_fraction: float = 0.25,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ArgumentError("val_fraction", f"must be in (0, 1), got {val_fraction}", "e.g. 0.25")
        if batch_size < 1:
            raise ArgumentError("batch_size", f"must be >= 1, got {batch_size}", "e.g. 32")
        x, y = make_toy2d(name, n_samples, noise, seed, num_classes)
        n_val = round(n_samples * val_fraction)
        if n_val < 1 or n_val >= n_samples:
            raise ArgumentError(
                "val_fraction",
                f"{val_fraction} of {n_samples} points leaves an empty train or val split",
                "raise n_samples or change val_fraction",
            )
        self.name = name
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.seed = seed
        # make_toy2d already shuffled, so the first n_val points are a random validation split.
        self.x_val, self.y_val = torch.from_numpy(x[:n_val]), torch.from_numpy(y[:n_val])
        self.x_train, self.y_train = torch.from_numpy(x[n_val:]), torch.from_numpy(y[n_val:])

    def model_kwargs(self) -> dict[str, int]:
        """What a classifier needs from the data: input width and number of classes."""
        return {"in_features": 2, "num_classes": self.num_classes}

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        dataset = TensorDataset(self.x_train, self.y_train)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x_val, self.y_val), batch_size=self.batch_size)
