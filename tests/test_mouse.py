"""The procedural mouse (facelift_lib.mouse) and how it wanders."""
from __future__ import annotations

import pytest
import torch

from facelift_lib.mouse import (ARENA_RADIUS_MM, MOUSE_PARTS, MousePose, arena_params, body_center, mouse_gaussians,
                                mouse_gaussians_with_parts, mouse_trajectory)
from facelift_lib.synthetic_rig import markerless_mouse_rig


def _part(part: torch.Tensor, name: str) -> torch.Tensor:
    return part == MOUSE_PARTS.index(name)


# --- the mouse ----------------------------------------------------------------------------------------
def test_mouse_has_adult_size_and_a_long_thin_tail():
    g, part = mouse_gaussians_with_parts(MousePose(), n=4000, seed=0)
    assert len(g) == 4000 and g.means.dtype == torch.float32
    x = g.means[:, 0]
    body = ~_part(part, "tail")
    rump, nose = float(x[_part(part, "trunk")].min()), float(x[body].max())
    body_length = nose - rump
    assert 80.0 < body_length < 100.0
    behind = g.means[x < rump - 10.0]  # everything well behind the rump is tail
    assert len(behind) > 100
    assert 0.75 * body_length < rump - float(x.min()) < 1.2 * body_length
    assert float(behind[:, 1].abs().max()) < 5.0 and float(behind[:, 2].max()) < 8.0  # thin, lying low
    assert float(g.means[:, 2].min()) > -0.5  # nothing sinks into the floor


def test_pose_scale_and_placement():
    g0, part = mouse_gaussians_with_parts(MousePose(), n=1500, seed=3)
    g1, part1 = mouse_gaussians_with_parts(MousePose(x=12.0, y=-7.0, heading_deg=90.0, scale=0.8), n=1500, seed=3)
    assert torch.equal(part, part1)  # gaussian i is the same bit of mouse in every pose (4D ground truth)
    R = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    expected = 0.8 * g0.means @ R.T + torch.tensor([12.0, -7.0, 0.0])
    torch.testing.assert_close(g1.means, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(g1.scales, 0.8 * g0.scales)
    torch.testing.assert_close(body_center(g1, part1)[:2].float(), torch.tensor([12.0, -7.0]), atol=2.0, rtol=0)


def test_rearing_lifts_the_head_and_keeps_hind_paws_down():
    flat, part = mouse_gaussians_with_parts(MousePose(), n=2000, seed=0)
    up, _ = mouse_gaussians_with_parts(MousePose(rearing=1.0), n=2000, seed=0)
    head = _part(part, "head")
    assert float(up.means[head, 2].mean() - flat.means[head, 2].mean()) > 30.0
    hind_feet = _part(part, "foot") & (flat.means[:, 0] < 0)
    torch.testing.assert_close(up.means[hind_feet], flat.means[hind_feet])
    # the posed splats stay unit quaternions
    torch.testing.assert_close(up.quats.norm(dim=-1), torch.ones(len(up)), atol=1e-5, rtol=0)


def test_fur_variants_and_dark_eyes():
    cols = {fur: mouse_gaussians_with_parts(MousePose(fur=fur), n=1500, seed=0) for fur in ("brown", "black", "white")}
    trunk = _part(cols["black"][1], "trunk")
    lum = {fur: float(g.colors[trunk].mean()) for fur, (g, _) in cols.items()}
    assert lum["black"] < 0.2 < lum["brown"] < 0.6 < lum["white"]
    g, part = cols["white"]
    assert float(g.colors[_part(part, "eye")].max()) < 0.1
    ear = g.colors[_part(part, "ear")].mean(0)
    assert ear[0] > ear[2] + 0.1  # pinkish
    assert float(g.colors[trunk].std(0).mean()) > 0.01  # per-gaussian noise
    with pytest.raises(ValueError, match="fur"):
        mouse_gaussians(MousePose(fur="green"), n=1000)


# --- motion -------------------------------------------------------------------------------------------
def test_trajectory_wanders_smoothly_over_the_arena_and_rears():
    # (issue 13: the arena grew from 50 to 110 mm so the mouse reaches the image border as in real recordings)
    for seed in range(3):
        poses = mouse_trajectory(150, seed)
        xy = torch.tensor([[p.x, p.y] for p in poses], dtype=torch.float64)
        r = xy.norm(dim=-1)
        assert float(r.max()) <= ARENA_RADIUS_MM + 1e-9
        assert float(r.mean()) > 30.0 and float((r > 60.0).float().mean()) > 0.1  # often out near the walls
        assert float((xy[1:] - xy[:-1]).norm(dim=-1).max()) < 15.0  # no jumps
        heading = torch.tensor([p.heading_deg for p in poses], dtype=torch.float64)
        dh = torch.remainder(heading[1:] - heading[:-1] + 180.0, 360.0) - 180.0
        assert float(dh.abs().max()) <= 25.0 + 1e-9 and float(dh.abs().sum()) > 180.0  # it turns, smoothly
        rear = torch.tensor([p.rearing for p in poses])
        assert 0.5 < float(rear.max()) <= 1.0 and float((rear > 0.05).float().mean()) < 0.6


def test_trajectory_is_deterministic_and_prefix_stable():
    a, b = mouse_trajectory(40, seed=5), mouse_trajectory(40, seed=5)
    assert a == b
    assert mouse_trajectory(10, seed=5) == a[:10]
    assert mouse_trajectory(10, seed=6) != a[:10]


def _in_view_rates(params) -> tuple[float, float]:
    """(views holding the whole mouse, views holding its whole body without the tail) over 2 x 60 frames."""
    cams = markerless_mouse_rig(1.0)
    inside_all, body_inside, n = 0, 0, 0
    for seed in range(2):
        for pose in mouse_trajectory(60, seed, params=params):
            g, part = mouse_gaussians_with_parts(pose, n=1000, seed=seed)
            uv, z = cams.project(g.means)
            ok = (uv[..., 0] >= 0) & (uv[..., 0] <= cams.width) & (uv[..., 1] >= 0) & (uv[..., 1] <= cams.height)
            ok &= z > 0
            inside_all += int(ok.all(1).sum())
            body_inside += int(ok[:, ~_part(part, "tail")].all(1).sum())
            n += len(cams)
    return inside_all / n, body_inside / n


def test_mouse_reaches_the_image_border_as_often_as_in_real_recordings():
    """Real markerless_mouse_1 recordings: 36 of 144 raw masks (25 %) touch the border. The default arena
    puts ~1/4 of the views across it, the body stays in most views; a small arena keeps the mouse inside.
    (issue 13: this replaced a test that wanted the mouse inside > 85 % of the views.)"""
    whole, body = _in_view_rates(None)
    assert 0.15 < 1 - whole < 0.40 and body > 0.8
    whole_small, body_small = _in_view_rates(arena_params(50.0))
    assert whole_small > 0.85 and body_small > 0.98
