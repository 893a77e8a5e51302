"""Figure helpers: geometry of the frustums, and that each helper draws what it is given."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from facelift_lib import cameras, viz


def test_frustum_corners_project_to_image_corners():
    cams = cameras.orbit_cameras([0, 90, 200], 20.0, distance=2.7, fx=500.0, fy=520.0, cx=250.0, cy=260.0,
                                 width=512, height=480)
    segs = viz.frustum_segments(cams, depth=0.4)
    assert segs.shape == (3, 9, 2, 3)
    corners = torch.from_numpy(segs[:, :4, 1].copy())                     # [V,4,3] centre->corner ends
    for v in range(3):
        uv, z = cams[v].project(corners[v])
        np.testing.assert_allclose(uv[0].numpy(), [[0, 0], [512, 0], [512, 480], [0, 480]], atol=1e-6)
        np.testing.assert_allclose(z[0].numpy(), 0.4, atol=1e-9)
        np.testing.assert_allclose(segs[v, :4, 0], cams.centers[v].expand(4, 3).numpy(), atol=1e-9)
    # the up tick points to smaller image y, i.e. up in the image
    uv, _ = cams[0].project(torch.from_numpy(segs[0, 8].copy()))
    assert uv[0, 1, 1] < uv[0, 0, 1]


def test_image_grid_outlines_masks_and_marks():
    imgs = torch.rand(5, 4, 32, 48)
    masks = torch.zeros(5, 32, 48)
    masks[:, 8:20, 10:30] = 1
    fig = viz.image_grid(imgs, masks=masks, titles=list("abcde"), marks=[(20, 14)] * 5, ncols=3)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 5 and len(fig.axes) == 6
    assert all(ax.collections for ax in axes)                 # contour + scatter on every view
    assert [ax.get_title() for ax in axes] == list("abcde")
    matplotlib.pyplot.close(fig)


def test_cameras_3d_and_curves():
    cams = cameras.facelift_standard()
    pts = torch.randn(5000, 3) * 0.3
    fig = viz.plot_cameras_3d(cams, points=pts, colors=torch.rand(5000, 3), max_points=1000)
    assert len(fig.data) == len(cams) + 2 and len(fig.data[-1].x) == 1000
    mpl = viz.plot_camera_frustums_mpl(cams, points=pts)
    assert len(mpl.axes[0].collections) >= len(cams)
    curves = viz.plot_curves({"step": [0, 1, 2, 3], "loss": [1.0, 0.5, float("nan"), 0.2]}, "step", "loss",
                             marks={"skipped": [2]})
    labels = curves.axes[0].get_legend_handles_labels()[1]
    assert labels == ["loss", "skipped (1)"]
    matplotlib.pyplot.close("all")


def test_browser_only_with_a_live_frontend(monkeypatch):
    calls = []
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert viz.browser(lambda f, c: calls.append((f, c)), n_frames=3, n_cameras=2) is None and calls == []
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/00_data.ipynb")
    w = viz.browser(lambda f, c: calls.append((f, c)), n_frames=3, n_cameras=2, camera_names=["a", "b"])
    assert w is not None and calls == [(0, 0)]
    slider, dropdown = w.children[0].children
    slider.value = 2
    dropdown.value = 1
    assert calls[-2:] == [(2, 0), (2, 1)]


def test_camera_comparison_figures():
    sets = {"standard": cameras.facelift_standard(), "mouse6": cameras.mouse_standard_6view()}
    fig = viz.plot_camera_distributions(sets)
    az_el = fig.axes[0].collections
    assert len(az_el) == 2 and az_el[1].get_offsets().shape == (6, 2)
    np.testing.assert_allclose(np.sort(az_el[1].get_offsets()[:, 1]), 20.0, atol=1e-9)   # elevations
    rays = viz.plot_ray_distributions(sets, size=4)
    assert rays.axes[0].collections[0].get_offsets().shape == (6 * 16, 2)
    m = viz.plot_matrix(np.arange(6.0).reshape(2, 3), ["a", "b"], ["x", "y", "z"])
    assert [t.get_text() for t in m.axes[0].texts] == ["0.00", "1.00", "2.00", "3.00", "4.00", "5.00"]
    matplotlib.pyplot.close("all")


def test_point_clouds_are_drawn_in_three_projections():
    a = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    b = np.random.default_rng(0).normal(size=(10_000, 3))
    fig = viz.plot_point_clouds({"true": a, "predicted": b}, max_points=500)
    top, side, front = fig.axes[:3]
    for ax, (i, j) in zip((top, side, front), ((0, 1), (0, 2), (1, 2))):
        first, second = ax.collections
        np.testing.assert_allclose(first.get_offsets(), a.numpy()[:, [i, j]])
        assert len(second.get_offsets()) == 500  # subsampled
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["true", "predicted"]


def test_rays_start_at_the_camera_and_cross_the_image_grid():
    cams = cameras.orbit_cameras([0, 120], 20.0, distance=2.7, fx=500.0, fy=500.0, cx=256.0, cy=256.0,
                                 width=512, height=512)
    rays = viz.ray_segments(cams, rays_per_side=3, length=[1.0, 2.0])
    assert rays.shape == (2, 9, 2, 3)
    np.testing.assert_allclose(rays[:, :, 0], cams.centers[:, None].expand(2, 9, 3).numpy(), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(rays[:, :, 1] - rays[:, :, 0], axis=-1), [[1.0] * 9, [2.0] * 9])
    uv, _ = cams[0].project(torch.from_numpy(rays[0, :, 1].copy()))
    np.testing.assert_allclose(uv[0, :3].numpy(), [[512 / 6, 512 / 6], [256, 512 / 6], [512 * 5 / 6, 512 / 6]],
                               atol=1e-6)  # the 3x3 grid's pixel centres, first row


def test_cameras_3d_with_rays_and_reference_cameras():
    rig = cameras.orbit_cameras([10, 130, 250], 35.0, distance=2.7, fx=500.0, fy=500.0, cx=256.0, cy=256.0,
                                width=512, height=512)
    fig = viz.plot_cameras_3d(rig, points=torch.randn(100, 3) * 0.2, rays_per_side=4,
                              reference=cameras.facelift_standard(), reference_name="FaceLift standard")
    names = [t.name for t in fig.data]
    assert names[:3] == list(viz._names(rig)) and "FaceLift standard" in names and names[-1] == "points"
    rays = [t for t in fig.data if t.name and t.name.endswith(" rays")]
    assert len(rays) == 3 and all(t.legendgroup == n for t, n in zip(rays, viz._names(rig)))
    assert all(r.line.color == f.line.color for r, f in zip(rays, fig.data[:3]))  # a camera and its rays share a colour
    assert len(rays[0].x) == 16 * 3  # 16 rays: start, end, NaN break
    with pytest.raises(ValueError, match="rays_per_side"):
        viz.ray_segments(rig, 0, 1.0)
