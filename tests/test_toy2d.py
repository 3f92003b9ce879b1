"""The seeded 2-D generators and their DataModule (llm_lab/data/toy2d.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llm_lab.data.toy2d import (
    BLOB_RADIUS,
    CIRCLES_INNER_RADIUS,
    GENERATORS,
    SPIRAL_TURNS,
    XOR_GAP,
    Toy2DDataModule,
    make_toy2d,
)
from llm_lab.errors import ArgumentError


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_shapes_types_balance_and_seeding(name: str) -> None:
    k = 3 if GENERATORS[name][1] is None else 2
    x, y = make_toy2d(name, n_samples=301, noise=0.1, seed=7, num_classes=k)
    assert x.shape == (301, 2) and x.dtype == np.float32
    assert y.shape == (301,) and y.dtype == np.int64
    counts = np.bincount(y, minlength=k)
    assert counts.max() - counts.min() <= 1, counts
    x2, y2 = make_toy2d(name, n_samples=301, noise=0.1, seed=7, num_classes=k)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = make_toy2d(name, n_samples=301, noise=0.1, seed=8, num_classes=k)
    assert not np.array_equal(x, x3)
    # Shuffled: the labels are not sorted by class.
    assert (np.diff(y) != 0).sum() > k


def test_clean_blobs_sit_on_their_centres() -> None:
    x, y = make_toy2d("blobs", n_samples=60, noise=0.0, num_classes=3)
    angles = 2 * np.pi * y / 3
    centres = BLOB_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    np.testing.assert_allclose(x, centres, atol=1e-6)


def test_clean_xor_labels_are_the_xor_of_the_signs() -> None:
    x, y = make_toy2d("xor", n_samples=400, noise=0.0)
    np.testing.assert_array_equal(y, ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64))
    assert np.abs(x).min() >= XOR_GAP - 1e-6 and np.abs(x).max() <= 1 + 1e-6
    # All four quadrants are used.
    assert len({(a, b) for a, b in np.sign(x).astype(int)}) == 4


def test_clean_moons_and_circles_lie_on_their_curves() -> None:
    x, y = make_toy2d("moons", n_samples=200, noise=0.0)
    centres = np.where(y[:, None] == 0, [0.0, 0.0], [1.0, 0.5])
    np.testing.assert_allclose(np.linalg.norm(x - centres, axis=1), 1.0, atol=1e-5)
    # The upper moon opens downwards, the lower one upwards.
    assert (x[y == 0, 1] >= -1e-6).all() and (x[y == 1, 1] <= 0.5 + 1e-6).all()

    x, y = make_toy2d("circles", n_samples=200, noise=0.0)
    radii = np.where(y == 0, 1.0, CIRCLES_INNER_RADIUS)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), radii, atol=1e-5)


def test_clean_spiral_angle_grows_with_radius() -> None:
    k = 3
    x, y = make_toy2d("spirals", n_samples=300, noise=0.0, num_classes=k)
    r = np.linalg.norm(x, axis=1)
    expected = 2 * np.pi * y / k + 2 * np.pi * SPIRAL_TURNS * r
    # Compare angles on the circle, so that wrapping past 2π does not matter.
    diff = np.angle(np.exp(1j * (np.arctan2(x[:, 1], x[:, 0]) - expected)))
    np.testing.assert_allclose(diff, 0.0, atol=1e-4)


def test_noise_is_gaussian_with_the_configured_std() -> None:
    sigma = 0.3
    x, y = make_toy2d("blobs", n_samples=20000, noise=sigma, num_classes=2)
    centres = np.where(y[:, None] == 0, [BLOB_RADIUS, 0.0], [-BLOB_RADIUS, 0.0])
    residual = x - centres
    # The std of 40,000 N(0, σ²) draws is within ~1 % of σ; allow 3 %.
    assert residual.std() == pytest.approx(sigma, rel=0.03)
    assert abs(residual.mean()) < 0.01
    # Isotropic: both coordinates get the same spread, independently.
    assert residual[:, 0].std() == pytest.approx(residual[:, 1].std(), rel=0.05)
    assert abs(np.corrcoef(residual.T)[0, 1]) < 0.05


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_samples": -5}, "n_samples"),
        ({"noise": -0.1}, "noise"),
        ({"noise": math.nan}, "noise"),
        ({"name": "swiss_roll"}, "name"),
        ({"name": "xor", "num_classes": 3}, "num_classes"),
        ({"name": "blobs", "num_classes": 1}, "num_classes"),
    ],
)
def test_bad_generator_config_names_the_argument(kwargs: dict, key: str) -> None:
    args = {"name": "moons", "n_samples": 10, "noise": 0.1} | kwargs
    with pytest.raises(ArgumentError) as err:
        make_toy2d(**args)
    assert err.value.arg == key
    assert str(err.value).startswith(f"{key}: ")


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ArgumentError, match="spirals") as err:
        make_toy2d("swiss_roll")
    for name in GENERATORS:
        assert name in str(err.value)


def test_datamodule_splits_and_serves_the_points() -> None:
    dm = Toy2DDataModule("spirals", n_samples=200, noise=0.05, num_classes=3, val_fraction=0.25)
    assert dm.model_kwargs() == {"in_features": 2, "num_classes": 3}
    assert len(dm.x_val) == 50 and len(dm.x_train) == 150
    # The two splits are disjoint and together are exactly the generated set.
    x, _ = make_toy2d("spirals", n_samples=200, noise=0.05, num_classes=3)
    both = torch.cat([dm.x_val, dm.x_train]).numpy()
    np.testing.assert_array_equal(np.sort(both, axis=0), np.sort(x, axis=0))
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (32, 2) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    n_val = sum(len(b[0]) for b in dm.val_dataloader())
    assert n_val == 50


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 0.001}, "val_fraction"),
        ({"batch_size": 0}, "batch_size"),
        ({"n_samples": 0}, "n_samples"),
    ],
)
def test_datamodule_rejects_bad_config(kwargs: dict, key: str) -> None:
    with pytest.raises(ArgumentError) as err:
        Toy2DDataModule(**({"n_samples": 100} | kwargs))
    assert err.value.arg == key
