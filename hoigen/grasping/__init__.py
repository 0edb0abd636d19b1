"""Grasp synthesis, grasp quality and trajectories (numpy/scipy/trimesh only).

Grasps live in the object's canonical frame (SPEC §2); trajectories start in it too.
"""

from hoigen.grasping.contact import (
    ContactGraspSampler,
    Grasp,
    GraspConfig,
    GraspError,
    sample_contact_grasp,
    score,
)
from hoigen.grasping.contact_v1 import ContactV1Sampler
from hoigen.grasping.metrics import force_closure_epsilon, grasp_metrics
from hoigen.grasping.sdf import GridSDF, MeshSDF, SurfaceSDF
from hoigen.grasping.trajectory import (
    Trajectory,
    TrajectoryConfig,
    approach_times,
    make_trajectory,
    transform_hand_params,
)

__all__ = [
    "ContactGraspSampler",
    "ContactV1Sampler",
    "GridSDF",
    "MeshSDF",
    "Grasp",
    "GraspConfig",
    "GraspError",
    "SurfaceSDF",
    "Trajectory",
    "TrajectoryConfig",
    "approach_times",
    "force_closure_epsilon",
    "grasp_metrics",
    "make_trajectory",
    "sample_contact_grasp",
    "score",
    "transform_hand_params",
]
