"""Simplify a surface without changing its topology, and measure what came out: whether it is a
printable solid, and how far the simplification moved it.

A marching-cubes surface is often a closed solid with thin parts and small tunnels (bench_chair's
has genus 27); an edge collapse free to change topology pinches such parts into slivers, and the
STL stops being printable (issue 15: fast-simplification left 94 bodies and non-manifold edges).
MeshLab's quadric edge collapse refuses such collapses when asked (``preservetopology``); on
bench_chair it also moved the surface least of the simplifiers tried (benchmarks/bench_simplify.py).

pymeshlab must first be imported on the main thread (``recond.worker.Worker.start`` does it, see
``load_main_thread_libraries``, before the worker thread imports the pipeline). Its import builds
Qt objects (the plugin manager, its plugin loaders and plugins) that live until the process exits
and hold references to the Qt data of the thread that made them. Made on the worker thread, which
has ended by then, the destructors run at exit release that data once too often: valgrind shows
``QThreadData::deref`` from ``PluginManager::~PluginManager`` decrementing a count in the block an
earlier plugin's destructor freed. With torch also first loaded on that thread, this corrupted the
malloc arena they share and the daemon aborted at exit (``malloc_consolidate(): unaligned fastbin
chunk detected``, exit code 134). Imported on the main thread, valgrind finds no such error, also
when meshes are simplified on a worker thread that then ends: a MeshSet is made and freed per call.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

import numpy as np
import trimesh

if "pymeshlab" not in sys.modules and threading.current_thread() is not threading.main_thread():
    raise ImportError("pymeshlab must first be imported on the main thread (see recond.pipeline.topology)")
import pymeshlab  # noqa: E402 (after the guard: an import on another thread would corrupt memory)

# Points sampled on each surface (its vertices first) for the Hausdorff distance. On bench_chair
# 30,000 already find the maximum that 200,000 find, in a third of the time (bench_simplify.py).
HAUSDORFF_SAMPLES = 50_000
# MeshLab's quadric edge collapse as the stage calls it: the defaults, but topology kept. Every
# parameter is given because pymeshlab carries a filter's parameters over from its previous call
# in the process (seen: planarquadric=True once, and later calls without it still had it on).
DECIMATION = {"targetperc": 0.0, "qualitythr": 0.3, "preserveboundary": False, "boundaryweight": 1.0,
              "preservenormal": False, "preservetopology": True, "optimalplacement": True,
              "planarquadric": False, "planarweight": 0.001, "qualityweight": False, "autoclean": True,
              "selected": False}


def simplify(mesh: trimesh.Trimesh, target_faces: int) -> trimesh.Trimesh:
    """Quadric decimation to about ``target_faces`` faces that keeps the surface's topology;
    0, or a mesh already that small, is kept.

    Topology kept: no edge collapse may pinch the surface or merge it with itself, so a closed
    solid stays one (watertight, manifold, outward) with its bodies and holes; MeshLab's
    autoclean drops the vertices and zero-area faces the collapses leave.
    """
    if target_faces == 0 or len(mesh.faces) <= target_faces:
        return mesh
    meshes = _meshset(mesh)
    meshes.meshing_decimation_quadric_edge_collapse(targetfacenum=target_faces, **DECIMATION)
    simple = meshes.current_mesh()
    return trimesh.Trimesh(simple.vertex_matrix(), simple.face_matrix(), process=False)


def simplify_freely(mesh: trimesh.Trimesh, target_faces: int) -> trimesh.Trimesh:
    """The same quadric decimation without the topology constraint: it reaches the target on any
    surface, pinching handles and splitting bodies as it must (a noisy one: recond.pipeline.budget)."""
    if target_faces == 0 or len(mesh.faces) <= target_faces:
        return mesh
    meshes = _meshset(mesh)
    meshes.meshing_decimation_quadric_edge_collapse(targetfacenum=target_faces,
                                                    **{**DECIMATION, "preservetopology": False})
    simple = meshes.current_mesh()
    return trimesh.Trimesh(simple.vertex_matrix(), simple.face_matrix(), process=False)


@dataclass(frozen=True)
class SolidFacts:
    """Whether a surface is a printable solid, judged as an STL reader sees it (vertices welded)."""

    watertight: bool  # every edge joins exactly two faces
    is_volume: bool  # watertight, consistently wound, enclosing a positive volume
    bodies: int  # edge-connected pieces


def solid_facts(mesh: trimesh.Trimesh) -> SolidFacts:
    solid = welded(mesh)
    return SolidFacts(bool(solid.is_watertight), bool(solid.is_volume), len(solid.split(only_watertight=False)))


def welded(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """The bare surface with vertices at one position made one (copies a texture seam split, say)."""
    return trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces)  # trimesh merges them on load


def hausdorff_to_diagonal(reference: trimesh.Trimesh, simple: trimesh.Trimesh,
                          samples: int = HAUSDORFF_SAMPLES) -> float:
    """Symmetric Hausdorff distance between two surfaces, as a fraction of ``reference``'s
    bounding-box diagonal (MeshLab's sampled Hausdorff filter, each way)."""
    meshes = _meshset(reference, simple)
    # Every parameter given, as for DECIMATION; maxdist (farther points are not counted): the diagonal.
    one_way = [meshes.get_hausdorff_distance(sampledmesh=sampled, targetmesh=target, savesample=False,
                                             samplevert=True, sampleedge=False, samplefauxedge=False,
                                             sampleface=True, samplenum=samples,
                                             maxdist=pymeshlab.PercentageValue(100))["max"]
               for sampled, target in ((0, 1), (1, 0))]
    return max(one_way) / float(np.linalg.norm(reference.extents))


def _meshset(*meshes: trimesh.Trimesh) -> pymeshlab.MeshSet:
    meshset = pymeshlab.MeshSet()
    for mesh in meshes:
        meshset.add_mesh(pymeshlab.Mesh(np.asarray(mesh.vertices, dtype=np.float64),
                                        np.asarray(mesh.faces, dtype=np.int32)))
    return meshset
