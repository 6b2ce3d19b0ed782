"""Turntable: rasterised frames of the textured mesh, PNGs and a browser-playable H.264 video."""

import re
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import trimesh
from PIL import Image

from recond.pipeline.turntable import render_turntable, write_turntable


def _textured_box(color_left=(255, 0, 0), color_right=(0, 0, 255)) -> trimesh.Trimesh:
    """A +Y-up box whose texture is two flat colours (left half / right half of the image)."""
    box = trimesh.creation.box(extents=(0.6, 1.0, 0.4)).subdivide()
    texture = np.zeros((16, 16, 3), dtype=np.uint8)
    texture[:, :8] = color_left
    texture[:, 8:] = color_right
    # Project onto the XY plane for UVs, squeezed away from the colour boundary.
    uv = np.stack([np.where(box.vertices[:, 0] < 0, 0.25, 0.75), box.vertices[:, 1] + 0.5], axis=1)
    box.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(texture))
    return box


@pytest.fixture(scope="module")
def frames():
    mesh = trimesh.creation.icosphere(subdivisions=3)
    mesh.vertices *= [0.5, 1.0, 0.3]  # not rotationally symmetric, so views differ
    texture = np.full((8, 8, 3), (230, 30, 30), dtype=np.uint8)
    mesh.visual = trimesh.visual.TextureVisuals(uv=np.full((len(mesh.vertices), 2), 0.5), image=Image.fromarray(texture))
    return render_turntable(mesh, 30, 64)


def test_renders_the_requested_number_of_frames_at_the_requested_size(frames):
    assert len(frames) == 30
    assert all(frame.shape == (64, 64, 3) and frame.dtype == np.uint8 for frame in frames)


def test_object_is_centred_and_shows_the_texture_colour(frames):
    centre = frames[0][24:40, 24:40].reshape(-1, 3).astype(int)
    red, green, blue = centre.mean(0)
    assert red > 120 and red > 2.5 * green and red > 2.5 * blue
    corners = np.concatenate([frames[0][:4, :4], frames[0][-4:, -4:]]).reshape(-1, 3)
    assert (corners == 255).all()  # white background


def test_object_rotates_between_frames(frames):
    silhouettes = [(frame < 250).any(-1) for frame in frames]
    width_front = silhouettes[0].any(0).sum()
    width_side = silhouettes[7].any(0).sum()  # a quarter turn later (30 views)
    assert abs(int(width_front) - int(width_side)) >= 6
    assert all(not np.array_equal(a, b) for a, b in zip(frames, frames[1:]))


def test_texture_halves_appear_on_the_sides_they_are_mapped_to():
    frame = render_turntable(_textured_box(), 4, 64)[1]  # view 1 looks from -Z after a quarter turn
    covered = (frame < 250).any(-1)
    cols = np.nonzero(covered.any(0))[0]
    left = frame[28:36, cols.min() + 2 : cols.min() + 8].reshape(-1, 3).mean(0)
    right = frame[28:36, cols.max() - 7 : cols.max() - 1].reshape(-1, 3).mean(0)
    # Seen from -Z, +X is on the left of the image: the blue (x > 0) half shows there.
    assert left[2] > 2 * left[0] and right[0] > 2 * right[2]


def test_vertex_coloured_mesh_renders_its_colours():
    mesh = trimesh.creation.icosphere(subdivisions=2)
    mesh.visual.vertex_colors = np.tile([20, 200, 40, 255], (len(mesh.vertices), 1))
    frame = render_turntable(mesh, 1, 48)[0]
    red, green, blue = frame[20:28, 20:28].reshape(-1, 3).mean(0)
    assert green > 2.5 * red and green > 2.5 * blue


def test_video_is_h264_yuv420p_with_every_frame(frames, tmp_path):
    written = write_turntable(frames, tmp_path, fps=30)
    assert [path.name for path in written[:2]] == ["render_000.png", "render_001.png"]
    assert written[-1] == tmp_path / "render.mp4"
    assert len(list(tmp_path.glob("render_*.png"))) == 30
    assert np.array_equal(np.asarray(Image.open(tmp_path / "render_007.png")), frames[7])

    n_frames, _ = imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "render.mp4"))
    assert n_frames == 30
    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(tmp_path / "render.mp4")],
        capture_output=True, text=True,
    ).stderr
    assert re.search(r"Video: h264 .*yuv420p.*64x64", probe), probe


def test_odd_frame_size_still_makes_a_valid_video(tmp_path):
    frames = render_turntable(trimesh.creation.icosphere(subdivisions=1), 3, 33)
    write_turntable(frames, tmp_path, fps=10)
    n_frames, _ = imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "render.mp4"))
    assert n_frames == 3


def _covered_share(frame: np.ndarray) -> float:
    """Share of the frame's pixels that show something other than the white background."""
    return float((frame < 250).any(axis=2).mean())


def test_frames_the_kept_object_once_floaters_are_dropped():
    from recond.pipeline.mesh import drop_floaters

    body = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    speck = trimesh.creation.icosphere(subdivisions=1, radius=0.02).apply_translation([0.0, 1.5, 0.0])
    with_speck = trimesh.util.concatenate([body, speck])
    kept, _, dropped = drop_floaters(with_speck, 0.02)
    assert dropped == 1
    cluttered = _covered_share(render_turntable(with_speck, 1, 64)[0])
    framed = _covered_share(render_turntable(kept, 1, 64)[0])
    # The kept sphere fills the frame (a disc of ~0.93 of its height: ~68% of the pixels); with
    # the speck the framing had to reach it and the sphere shrank to a fraction of that.
    assert framed > 0.5
    assert cluttered < framed / 3


def test_a_four_second_turn_blends_the_frames_between_without_more_renders(frames, tmp_path):
    """30 views, video_seconds = 4 at 30 fps (issue 26: 30 frames at 30 fps felt rushed): the
    video lasts about 4 s, with blended frames between the rendered ones; the PNGs stay 30."""
    write_turntable(frames, tmp_path, fps=30, seconds=4.0)
    assert len(list(tmp_path.glob("render_*.png"))) == 30
    n_frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "render.mp4"))
    assert 3.8 <= seconds <= 4.1 and 110 <= n_frames <= 121, (n_frames, seconds)
