"""Labelled image metrics and the evaluation protocol."""
from __future__ import annotations

import math

import pytest
import torch

from facelift_lib.metrics import (background_only, evaluate, image_metrics, make_lpips, mask_iou, psnr_full,
                                  psnr_masked, ssim_full, ssim_masked)


def images(seed: int = 0, n: int = 2, size: int = 24):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(n, 3, size, size, generator=g)
    pred = (target + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    return pred, target


def test_psnr_full_and_masked():
    pred, target = images()
    mse = ((pred - target) ** 2).mean((1, 2, 3))
    torch.testing.assert_close(psnr_full(pred, target), 10 * torch.log10(1 / mse))
    ones = torch.ones(2, 1, 24, 24)
    torch.testing.assert_close(psnr_masked(pred, target, ones), psnr_full(pred, target))
    # errors outside the mask do not count; inside they do
    mask = torch.zeros(2, 1, 24, 24)
    mask[..., 6:18, 6:18] = 1
    wrong_outside = torch.where(mask.bool().expand_as(pred), target, 1 - target)
    assert (psnr_masked(wrong_outside, target, mask) > 100).all()  # exact inside: MSE 0 (clamped at 1e-12)
    inside = ((pred - target) ** 2 * mask).sum((1, 2, 3)) / (3 * mask.sum((1, 2, 3)))
    torch.testing.assert_close(psnr_masked(pred, target, mask), 10 * torch.log10(1 / inside))


def test_ssim_full_and_masked():
    pred, target = images(1)
    torch.testing.assert_close(ssim_full(target, target), torch.ones(2))
    s = ssim_full(pred, target)
    assert ((s > 0) & (s < 1)).all()
    torch.testing.assert_close(ssim_masked(pred, target, torch.ones(2, 1, 24, 24)), s)
    mask = torch.zeros(2, 1, 24, 24)
    mask[..., :12] = 1
    half_right = torch.cat([target[..., :12], pred[..., 12:]], -1)  # correct where the mask is, wrong elsewhere
    assert (ssim_masked(half_right, target, mask) > ssim_full(half_right, target)).all()


def test_mask_iou_exact():
    a = torch.zeros(1, 1, 10, 10)
    b = torch.zeros(1, 1, 10, 10)
    a[..., 0:4, 0:4] = 0.9    # 16 px
    b[..., 2:6, 0:4] = 0.6    # 16 px, 8 shared
    torch.testing.assert_close(mask_iou(a, b), torch.tensor([8 / 24]))
    b[..., 2:6, 0:4] = 0.4    # below the 0.5 threshold: empty target, non-empty prediction
    assert mask_iou(a, b).item() == 0.0
    assert math.isnan(mask_iou(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)).item())


def test_metric_names_are_labelled():
    pred, target = images()
    m = image_metrics(pred, torch.ones(2, 1, 24, 24), target, torch.ones(2, 1, 24, 24))
    assert set(m) == {"psnr_full", "psnr_masked", "ssim_full", "ssim_masked", "mask_iou"}
    assert all(k.endswith(("_full", "_masked")) or k == "mask_iou" for k in m)


def test_lpips_needs_local_weights(tmp_path):
    with pytest.raises(ValueError, match="local weights"):
        make_lpips(None)
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        make_lpips(tmp_path)


class TinyDataset:
    """Two samples of 6 views: a coloured square on white, alpha = the square."""

    background = torch.ones(3)

    def __init__(self, size: int = 16):
        from facelift_lib.cameras import mouse_standard_6view

        cams = mouse_standard_6view()
        K = cams.K.float().clone()
        K[:, :2] *= size / 512
        self.items = []
        for i in range(2):
            alpha = torch.zeros(6, 1, size, size)
            alpha[..., 4:12, 5:11] = 1
            rgb = torch.ones(6, 3, size, size) * (1 - alpha) + alpha * torch.tensor([0.4, 0.3 + 0.1 * i, 0.2]).view(1, 3, 1, 1)
            self.items.append(dict(images=torch.cat([rgb, alpha], 1), K=K, w2c=cams.w2c.float(), name=f"s{i}"))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_evaluate_background_only_baseline():
    ds = TinyDataset()
    table, means = evaluate(background_only, ds, views="held_out", num_input_views=5, progress=False)
    assert list(table["sample"]) == ["s0", "s1"] and (table["n_views"] == 1).all()
    assert means["mask_iou"] == 0.0 and means["views"] == "held_out" and means["n_samples"] == 2
    # the empty render is pure white: masked PSNR is that of white against the square's colour
    for i, row in table.iterrows():
        colour = torch.tensor([0.4, 0.3 + 0.1 * i, 0.2])
        expected = 10 * math.log10(1 / float(((1 - colour) ** 2).mean()))
        assert row["psnr_masked"] == pytest.approx(expected, abs=1e-4)
    table_all, _ = evaluate(background_only, ds, views="all", progress=False)
    assert (table_all["n_views"] == 6).all()
    with pytest.raises(ValueError, match="held_out"):
        evaluate(background_only, ds, views="novel", progress=False)
