"""Turntable renders of the finished mesh: PNG frames and a browser-friendly H.264 video.

Upstream TripoSR renders its turntable by volume-rendering the triplane (minutes on CPU);
rasterising the textured mesh we already export takes seconds and shows exactly what the
user downloads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import imageio_ffmpeg
import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from PIL import Image

from recond.pipeline.appearance import bounding_sphere, surface_color, vertex_normals
from recond.pipeline.child import run_child
from recond.pipeline.names import VIDEO_NAME, frame_name
from recond.pipeline.progress import StageClock
from recond.pipeline.raster import rasterize

FOVY_DEG = 40.0  # upstream tsr/system.py renders with fovy 40 as well
ELEVATION_DEG = 12.0  # a little above the object reads its shape better than the horizon
FRAME_MARGIN = 1.08  # the bounding sphere fills ~93% of the frame height
SUPERSAMPLE = 2  # render at 2x and average: cheap anti-aliasing for the rasteriser
BACKGROUND = (1.0, 1.0, 1.0)
# Shading: mostly the baked colour (TripoSR's colours already contain the photo's lighting),
# plus a soft headlight so the silhouette's relief stays readable.
AMBIENT = 0.62
DIFFUSE = 0.38
# x264's constant rate factor: 15 is what imageio-ffmpeg's quality=7, used before, maps to
# (1 - 7/10) * 51); visually clean at the frame sizes we render.
VIDEO_CRF = 15
# x264's speed: its "veryfast" preset on one thread encoded the 4 s turntable of bench_chair in
# 0.14 instead of 0.35 CPU-s (the "medium" default on all cores), for a file 0.6% larger at the
# same CRF (issue 23; ffmpeg's CPU time from getrusage, two runs each). One thread: a host
# process is one core's work, and x264's frame threads only add overhead at 256 x 256.
VIDEO_PRESET = "veryfast"
VIDEO_THREADS = 1
# zlib level of the PNG frames: the same pixels as Pillow's default 6 in a quarter of its time
# (30 frames: ~0.4 CPU-s of the host part, issue 23), files ~25% larger.
FRAME_PNG_LEVEL = 1


@dataclass
class _SceneTensors:
    """The mesh prepared once for every view: geometry, the per-vertex shading table and the
    colour source."""

    positions: torch.Tensor  # [V, 3]
    faces: torch.Tensor  # [F, 3]
    # [V, 5] normal and UV when textured, [V, 6] normal and colour when vertex-coloured: one
    # table, so a view gathers and interpolates it once for all the covered pixels (two passes
    # over the pixels' corners cost ~0.1 CPU-s more a turntable on bench_chair, issue 23).
    shading: torch.Tensor
    texture: torch.Tensor | None  # [1, 3, H, W] when textured
    center: torch.Tensor  # [3]
    radius: float
    face_normals: torch.Tensor | None  # [F, 3] outward, unnormalised: a closed solid's, for culling
    # [F] each face's normal . its first corner, with face_normals: a face faces an eye e when
    # face_normals @ e >= face_offsets (the plane test without gathering corners per view).
    face_offsets: torch.Tensor | None


def render_turntable(
    mesh: trimesh.Trimesh,
    n_views: int,
    size: int,
    device: str = "cpu",
    progress: Callable[[float], None] | None = None,
    closed: bool = False,
) -> list[np.ndarray]:
    """Render n_views frames (uint8 [size, size, 3]) orbiting the +Y axis of a +Y-up mesh.

    ``closed``: the mesh is a closed, outward-wound solid (the mesh stage's is_volume), so a
    face turned away from the camera is always hidden behind one turned towards it and is not
    rasterised (about half the faces; the same frames but for a rare pixel on an edge)."""
    if len(mesh.faces) == 0:
        raise ValueError("render_turntable needs a mesh with at least one face")
    report = progress or (lambda fraction: None)
    scene = _scene_tensors(mesh, torch.device(device), closed)
    frames = []
    with torch.no_grad():
        for view in range(n_views):
            # Same azimuth sequence as upstream get_spherical_cameras (tsr/utils.py): view 0
            # looks from +X, where the input photo's camera sits once z-up becomes +Y-up.
            azimuth = 2.0 * math.pi * view / n_views
            image = _render_view(scene, azimuth, size * SUPERSAMPLE)
            image = F.avg_pool2d(image.permute(2, 0, 1)[None], SUPERSAMPLE)[0].permute(1, 2, 0)
            frames.append((image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
            report((view + 1) / n_views)
    return frames


def write_turntable(frames: list[np.ndarray], result_dir: Path, fps: int,
                    clock: StageClock | None = None, seconds: float | None = None) -> list[Path]:
    """Write render_000.png ... and render.mp4 (H.264, yuv420p: plays in every browser), one turn
    in ``seconds`` (None: one frame per video frame); ffmpeg is held to ``clock``'s time limit
    (none without one: benchmarks, tests of the frames)."""
    result_dir = Path(result_dir)
    written = []
    for index, frame in enumerate(frames):
        path = result_dir / frame_name(index)
        Image.fromarray(frame).save(path, compress_level=FRAME_PNG_LEVEL)
        written.append(path)
    video_path = result_dir / VIDEO_NAME
    _write_video(frames, video_path, fps, clock or StageClock(lambda fraction: None, math.inf, math.inf),
                 seconds)
    written.append(video_path)
    return written


def _scene_tensors(mesh: trimesh.Trimesh, device: torch.device, closed: bool = False) -> _SceneTensors:
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    center, radius = bounding_sphere(vertices)
    color = surface_color(mesh)
    texture = None
    if color.texture is not None and color.uv is not None:
        texture = (np.asarray(color.texture, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None].copy()
        surface = color.uv
    else:
        assert color.vertex_colors is not None, "an untextured mesh carries vertex colours"
        surface = color.vertex_colors
    shading = np.concatenate([vertex_normals(vertices, faces), surface], axis=1).astype(np.float32)
    face_normals = _face_normals(vertices, faces) if closed else None
    face_offsets = None if face_normals is None else np.einsum("fc,fc->f", face_normals, vertices[faces[:, 0]])

    def as_tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(device)

    def optional(array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else as_tensor(array)

    return _SceneTensors(
        positions=as_tensor(vertices),
        faces=as_tensor(faces),
        shading=as_tensor(shading),
        texture=optional(texture),
        center=as_tensor(center),
        radius=radius,
        face_normals=optional(face_normals),
        face_offsets=optional(face_offsets),
    )


def _face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Each face's (v1 - v0) x (v2 - v0): outward for an outward-wound solid, its length twice the area."""
    corners = vertices[faces]
    return np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).astype(np.float32)


def _facing(scene: _SceneTensors, eye: torch.Tensor) -> torch.Tensor:
    """The faces to rasterise from ``eye``: all, or for a closed solid those not turned away
    (seen edge-on included); a camera outside the solid sees none of the others."""
    if scene.face_normals is None or scene.face_offsets is None:
        return scene.faces
    return scene.faces[scene.face_normals @ eye >= scene.face_offsets]


def _render_view(scene: _SceneTensors, azimuth: float, size: int) -> torch.Tensor:
    """One float RGB image [size, size, 3] seen from `azimuth` radians around +Y."""
    eye, right, up, forward = _orbit_camera(scene, azimuth)
    faces = _facing(scene, eye)
    relative = scene.positions - eye
    distance = relative @ forward
    focal = 0.5 * size / math.tan(math.radians(FOVY_DEG) / 2)
    screen = torch.stack(
        [
            size / 2 + focal * (relative @ right) / distance,
            size / 2 - focal * (relative @ up) / distance,
            # -1/distance is affine in screen space, so the rasteriser's z-test stays exact.
            -1.0 / distance,
        ],
        dim=-1,
    )
    fragments = rasterize(screen, faces, size, size)
    # Shaded where the object is only (a quarter of a frame or so), pixel by pixel as before.
    covered = fragments.covered
    corners = faces[fragments.face_id[covered]]  # [N, 3] vertex ids of each covered pixel's face

    # Screen-space barycentrics -> perspective-correct ones (weights divided by depth).
    weights = fragments.bary[covered] / distance[corners]
    bary = weights / weights.sum(-1, keepdim=True).clamp(min=1e-12)
    # The shading table at the pixels: [N, 1, 3] x [N, 3, C] -> [N, C].
    shading = torch.bmm(bary.unsqueeze(1), scene.shading[corners]).squeeze(1)

    albedo = _albedo(scene, shading[:, 3:])
    normal = F.normalize(shading[:, :3], dim=-1)
    # Two-sided lighting: inner walls seen through openings are lit, not black.
    view_dir = -forward
    normal = torch.where((normal @ view_dir)[..., None] < 0, -normal, normal)
    light = F.normalize(view_dir + 0.45 * up - 0.3 * right, dim=0)
    shade = AMBIENT + DIFFUSE * (normal @ light).clamp(min=0)
    image = torch.tensor(BACKGROUND, device=albedo.device).expand(size, size, 3).clone()
    image[covered] = albedo * shade[..., None]
    return image


def _albedo(scene: _SceneTensors, surface: torch.Tensor) -> torch.Tensor:
    """The surface colour at the covered pixels [N, 3] from their interpolated UV (textured) or
    vertex colour (``surface``)."""
    if scene.texture is None:
        return surface
    # grid_sample's y runs down the image while UV v runs up.
    grid = torch.stack([surface[..., 0] * 2 - 1, 1 - surface[..., 1] * 2], dim=-1)[None, None]
    sampled = F.grid_sample(scene.texture, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[0, :, 0].T


def _orbit_camera(scene: _SceneTensors, azimuth: float):
    """Eye and camera axes for the orbit; the bounding sphere fits the vertical field of view."""
    distance = FRAME_MARGIN * scene.radius / math.sin(math.radians(FOVY_DEG) / 2)
    elevation = math.radians(ELEVATION_DEG)
    direction = torch.tensor(
        [
            math.cos(elevation) * math.cos(azimuth),
            math.sin(elevation),
            -math.cos(elevation) * math.sin(azimuth),
        ],
        device=scene.positions.device,
    )
    eye = scene.center + distance * direction
    forward = -direction
    world_up = torch.tensor([0.0, 1.0, 0.0], device=forward.device)
    right = F.normalize(torch.linalg.cross(forward, world_up), dim=0)
    up = torch.linalg.cross(right, forward)
    return eye, right, up, forward


def _write_video(frames: list[np.ndarray], path: Path, fps: int, clock: StageClock,
                 seconds: float | None = None) -> None:
    """H.264 in yuv420p with even dimensions (4:2:0 chroma needs them) and faststart, from
    ffmpeg run as a child the stage can stop (recond.pipeline.child). With ``seconds``, the
    frames are spread over that long and ffmpeg's framerate filter blends neighbours into the
    ``fps`` frames between (no more renders); without it, one frame per video frame."""
    height, width = frames[0].shape[:2]
    pad = ((0, height % 2), (0, width % 2), (0, 0))
    raw = b"".join(np.ascontiguousarray(np.pad(frame, pad, mode="edge")).tobytes() for frame in frames)
    input_rate = f"{len(frames) / seconds:.6g}" if seconds else str(fps)
    blend = ["-vf", f"framerate=fps={fps}"] if seconds and len(frames) / seconds < fps else ["-r", str(fps)]
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error",
        "-f", "rawvideo", "-vcodec", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{width + width % 2}x{height + height % 2}", "-r", input_rate, "-i", "-", "-an", *blend,
        "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", str(VIDEO_CRF),
        "-preset", VIDEO_PRESET, "-threads", str(VIDEO_THREADS),
        "-movflags", "+faststart", str(path),
    ]
    run_child(command, raw, clock, "render", "ffmpeg")
