"""GrabNet grasps (Taheri et al., ECCV 2020): CoarseNet + RefineNet in PyTorch, run on the user's released weights.

The modules carry the attribute names and shapes of GrabNet's released checkpoints (``coarsenet.pt``,
``refinenet.pt``: plain state dicts), which are loaded **strictly** — a missing, unexpected or misshaped tensor is an
error that lists them, never a silently half-initialised network. Files are opened with ``weights_only=True``.

Pipeline for one batch of candidates (REFERENCE.md, "GrabNet"):

1. the object (hoigen's canonical frame, metres, bounding-box centred) as 10 000 surface points, optionally turned
   by a random rotation ``R`` (GrabNet frame = ``R`` @ object frame), is encoded as BPS distances to the user's
   4096-point basis;
2. CoarseNet's decoder maps ``z ~ N(0, I)`` (from a ``torch.Generator`` seeded from the caller's ``rng``) and the BPS
   to 16 joint rotations in the 6D form (the first two columns of each matrix, Gram-Schmidt back to a matrix) and a
   MANO translation;
3. RefineNet runs three residual iterations on (hand-vertex-to-nearest-object-point distances, pose, translation);
   from the second on the MANO hand is rebuilt and the 778 distances recomputed;
4. the result goes back to the object frame, is posed with hoigen's LBS, optionally de-penetrated a little, and is
   scored and gated with the same metrics and :meth:`GraspConfig.passes` as the contact sampler.

MANO is the user's (``--hand mano``), mean shape (betas 0, as GrabNet samples), full 45-D axis-angle finger pose,
flat mean. torch is needed (``pip install hoigen[mano]``); the torch-free parts are in
:mod:`hoigen.grasping.grabnet_data`.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"--grasp grabnet needs torch ({_exc}); install it with: pip install hoigen[mano]"
    ) from _exc

from hoigen.geometry.rotations import matrix_to_axis_angle
from hoigen.grasping.contact import GateSelection, Grasp, GraspConfig, GraspError, back_off_penetration, score
from hoigen.grasping.grabnet_data import (
    BPS_FILE,
    BPS_POINTS,
    COARSENET_FILE,
    FLAG_HINT,
    REFINENET_FILE,
    GrabNetAssetError,
    check_grabnet_hand,
    find_grabnet_files,
    grabnet_size_problem,
    load_bps_basis,
    object_points,
)
from hoigen.grasping.metrics import grasp_metrics
from hoigen.grasping.sdf import SurfaceSDF
from hoigen.hands.lbs import lbs
from hoigen.hands.model import (
    NUM_BETAS,
    NUM_JOINTS,
    HandModel,
    HandModelData,
    HandParams,
)

logger = logging.getLogger(__name__)

LATENT_DIM = 16
POSE_6D = NUM_JOINTS * 6  # 96
NUM_HAND_VERTICES = 778
ROTATE_MODES = ("none", "up", "full")


# -- rotations ----------------------------------------------------------------------------------------------------
def rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """GrabNet's 6D rotation -> matrix. ``x``: (..., 6), the 3x2 matrix of the first two columns read row by row;
    returns (..., 3, 3) with those columns orthonormalised (Gram-Schmidt) and the third their cross product."""
    cols = x.reshape(*x.shape[:-1], 3, 2)
    first = F.normalize(cols[..., 0], dim=-1)
    second = cols[..., 1] - (first * cols[..., 1]).sum(dim=-1, keepdim=True) * first
    second = F.normalize(second, dim=-1)
    return torch.stack([first, second, torch.cross(first, second, dim=-1)], dim=-1)


def matrix_to_rot6d(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rot6d_to_matrix` on rotation matrices: (..., 3, 3) -> (..., 6)."""
    return matrix[..., :2].reshape(*matrix.shape[:-2], 6)


# -- the networks (attribute names = the released checkpoints' keys) ------------------------------------------
class ResBlock(nn.Module):
    """Linear(in->hidden) -> BN -> LeakyReLU(0.2) -> Linear(hidden->out) -> BN, plus the skip (identity, or
    LeakyReLU(Linear ``fc3``) when the widths differ), LeakyReLU after the sum."""

    def __init__(self, fin: int, fout: int, hidden: int = 256):
        super().__init__()
        self.fin, self.fout = fin, fout
        self.fc1 = nn.Linear(fin, hidden)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, fout)
        self.bn2 = nn.BatchNorm1d(fout)
        if fin != fout:
            self.fc3 = nn.Linear(fin, fout)
        self.act = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.fin == self.fout else self.act(self.fc3(x))
        h = self.act(self.bn1(self.fc1(x)))
        return self.act(skip + self.bn2(self.fc2(h)))


class CoarseNet(nn.Module):
    """GrabNet's cVAE (about 14.0 M parameters).

    Encoder: [BPS (4096), wrist rotation matrix (9), translation (3)] -> BN -> two blocks (the second also sees the
    normalised input) -> mean and softplus-scale heads. Decoder: [z, BN(BPS)] -> two blocks likewise -> 16 x 6D
    rotations and a translation. ``enc_bn0`` is part of the released checkpoint but unused by the forward pass.
    """

    def __init__(self, n_bps: int = BPS_POINTS, latent: int = LATENT_DIM, width: int = 512, n_pose: int = 12):
        super().__init__()
        self.latent_dim = latent
        self.enc_bn0 = nn.BatchNorm1d(n_bps)
        self.enc_bn1 = nn.BatchNorm1d(n_bps + n_pose)
        self.enc_rb1 = ResBlock(n_bps + n_pose, width)
        self.enc_rb2 = ResBlock(width + n_bps + n_pose, width)
        self.enc_mu = nn.Linear(width, latent)
        self.enc_var = nn.Linear(width, latent)
        self.dec_bn1 = nn.BatchNorm1d(n_bps)
        self.dec_rb1 = ResBlock(latent + n_bps, width)
        self.dec_rb2 = ResBlock(width + latent + n_bps, width)
        self.dec_pose = nn.Linear(width, POSE_6D)
        self.dec_trans = nn.Linear(width, 3)

    def encode(
        self, bps: torch.Tensor, transl: torch.Tensor, wrist_rotmat: torch.Tensor
    ) -> torch.distributions.Normal:
        """bps: (B, 4096) metres; transl: (B, 3) MANO translation; wrist_rotmat: (B, 3, 3) -> q(z) (B, 16)."""
        x0 = self.enc_bn1(torch.cat([bps, wrist_rotmat.reshape(bps.shape[0], 9), transl], dim=1))
        h = self.enc_rb1(x0)
        h = self.enc_rb2(torch.cat([x0, h], dim=1))
        return torch.distributions.Normal(self.enc_mu(h), F.softplus(self.enc_var(h)))

    def decode(self, z: torch.Tensor, bps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (B, 16); bps: (B, 4096) metres -> 6D pose (B, 96) (wrist first, MANO joint order), transl (B, 3)."""
        x0 = torch.cat([z, self.dec_bn1(bps)], dim=1)
        h = self.dec_rb1(x0)
        h = self.dec_rb2(torch.cat([x0, h], dim=1))
        return self.dec_pose(h), self.dec_trans(h)


class RefineNet(nn.Module):
    """GrabNet's refinement network (about 3.3 M parameters): ``n_iters`` residual updates of pose and translation
    from [BN(hand-to-object distances) (778), 6D pose (96), translation (3)], dropout 0.3 after each block."""

    def __init__(self, n_verts: int = NUM_HAND_VERTICES, width: int = 512, n_iters: int = 3):
        super().__init__()
        in_size = n_verts + POSE_6D + 3
        self.n_iters = n_iters
        self.bn1 = nn.BatchNorm1d(n_verts)
        self.rb1 = ResBlock(in_size, width)
        self.rb2 = ResBlock(in_size + width, width)
        self.rb3 = ResBlock(in_size + width, width)
        self.out_p = nn.Linear(width, POSE_6D)
        self.out_t = nn.Linear(width, 3)
        self.dout = nn.Dropout(0.3)

    def step(
        self, dist: torch.Tensor, pose6d: torch.Tensor, transl: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One residual update. dist: (B, 778) metres; pose6d: (B, 96); transl: (B, 3)."""
        x0 = torch.cat([self.bn1(dist), pose6d, transl], dim=1)
        h = self.dout(self.rb1(x0))
        h = self.dout(self.rb2(torch.cat([h, x0], dim=1)))
        h = self.dout(self.rb3(torch.cat([h, x0], dim=1)))
        return pose6d + self.out_p(h), transl + self.out_t(h)

    def forward(
        self,
        dist: torch.Tensor,
        pose6d: torch.Tensor,
        transl: torch.Tensor,
        distances: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Refine. ``dist`` are the distances of the starting hand; ``distances(pose6d, transl)`` rebuilds the MANO
        hand and returns its (B, 778) vertex-to-nearest-object-point distances (called before iterations 2..n)."""
        for i in range(self.n_iters):
            if i > 0:
                dist = distances(pose6d, transl)
            pose6d, transl = self.step(dist, pose6d, transl)
        return pose6d, transl


# -- the MANO layer -------------------------------------------------------------------------------------------------
class TorchManoLayer(nn.Module):
    """MANO linear blend skinning in torch, from joint rotation matrices (same maths as :mod:`hoigen.hands.lbs`).

    Args:
        data: the hand model (MANO arrays, metres).
        dtype: tensor dtype of the buffers.
    """

    def __init__(self, data: HandModelData, dtype: torch.dtype = torch.float32):
        super().__init__()

        def buf(name, value):
            self.register_buffer(
                name, torch.as_tensor(np.ascontiguousarray(value), dtype=dtype), persistent=False
            )

        buf("v_template", data.v_template)
        buf("shapedirs", data.shapedirs[:, :, :NUM_BETAS])
        buf("J_regressor", data.J_regressor)
        buf("weights", data.weights)
        self.has_posedirs = data.posedirs is not None
        if self.has_posedirs:
            buf("posedirs", data.posedirs)
        self.parents = [int(p) for p in np.asarray(data.parents).reshape(-1)]

    def rest_joints(self, betas: torch.Tensor | None = None) -> torch.Tensor:
        """(B or 1, 16, 3) rest joints for ``betas`` (B, 10) (mean shape when None)."""
        v = self._shaped(betas)
        return torch.einsum("jv,bvc->bjc", self.J_regressor, v)

    def _shaped(self, betas: torch.Tensor | None) -> torch.Tensor:
        if betas is None:
            return self.v_template[None]
        return self.v_template[None] + torch.einsum("vck,bk->bvc", self.shapedirs, betas)

    def forward(
        self, rotmats: torch.Tensor, transl: torch.Tensor, betas: torch.Tensor | None = None
    ) -> torch.Tensor:
        """rotmats: (B, 16, 3, 3) local joint rotations (wrist first); transl: (B, 3) metres; betas: (B, 10) or
        None (mean shape). Returns (B, V, 3) vertices, metres, the frame of ``transl``."""
        b = rotmats.shape[0]
        v_shaped = self._shaped(betas).expand(b, -1, -1)
        joints = torch.einsum("jv,bvc->bjc", self.J_regressor, v_shaped)
        v_posed = v_shaped
        if self.has_posedirs:
            eye = torch.eye(3, dtype=rotmats.dtype, device=rotmats.device)
            feature = (rotmats[:, 1:] - eye).reshape(b, -1)
            v_posed = v_shaped + (feature @ self.posedirs).reshape(b, -1, 3)
        world_r, world_t = [rotmats[:, 0]], [joints[:, 0]]
        for j in range(1, len(self.parents)):
            p = self.parents[j]
            world_r.append(world_r[p] @ rotmats[:, j])
            world_t.append(world_t[p] + (world_r[p] @ (joints[:, j] - joints[:, p])[..., None])[..., 0])
        rot = torch.stack(world_r, dim=1)  # (B, 16, 3, 3)
        trans = torch.stack(world_t, dim=1) - (rot @ joints[..., None])[..., 0]  # skinning offsets
        blend_r = torch.einsum("vj,bjcd->bvcd", self.weights, rot)
        blend_t = torch.einsum("vj,bjc->bvc", self.weights, trans)
        verts = (blend_r @ v_posed[..., None])[..., 0] + blend_t
        return verts + transl[:, None]


# -- loading ----------------------------------------------------------------------------------------------------------
def _listing(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def load_state_dict_strict(module: nn.Module, path: str | Path, what: str) -> None:
    """Load a GrabNet checkpoint (a plain state dict) into ``module`` strictly, with ``weights_only=True``.

    A ``module.`` prefix on every key (a checkpoint saved from ``nn.DataParallel``) is removed.

    Raises:
        FileNotFoundError: no such file.
        GrabNetAssetError: unreadable/corrupt file, not a state dict, missing or unexpected keys, shape mismatches
            or non-finite values — all listed in the message.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GrabNet {what} weights {path} do not exist; {FLAG_HINT}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # asks for a global a tensor checkpoint never needs
        raise GrabNetAssetError(
            f"{path} is not a readable PyTorch checkpoint: it cannot be loaded safely (it holds Python objects other "
            "than tensors, or is cut short; hoigen loads checkpoints with weights_only=True and never runs code from "
            "a file); it may be corrupt or unsafe — do not load it another way; download GrabNet's "
            f"{path.name} again from its official source and {FLAG_HINT}"
        ) from exc
    except Exception as exc:  # whatever a corrupt file raises means the same to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise GrabNetAssetError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {reason}); it may be truncated, "
            f"corrupt or unsafe — download GrabNet's {path.name} again and {FLAG_HINT}"
        ) from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GrabNetAssetError(
            f"{path} holds a {type(state).__name__}, not a state dict of tensors as GrabNet's {path.name}; {FLAG_HINT}"
        )
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} expected"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches: {_listing(mismatched, 4)}")
        raise GrabNetAssetError(
            f"{path} does not match GrabNet's {what} (loaded strictly): {'; '.join(parts)}. It is not GrabNet's "
            f"released {path.name} (or comes from another GrabNet version); {FLAG_HINT}"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise GrabNetAssetError(
            f"{path}: {_listing(bad)} contain NaN or infinite values; the file is corrupt"
        )
    module.load_state_dict(state, strict=True)


_MODEL_CACHE: dict[tuple, GrabNet] = {}


class GrabNet:
    """The two networks (eval mode, float32, CPU) and the BPS basis.

    Args:
        coarse: CoarseNet; refine: RefineNet; basis: (4096, 3) BPS basis, metres; files: where they came from.
    """

    def __init__(self, coarse: CoarseNet, refine: RefineNet, basis: np.ndarray, files: dict | None = None):
        basis = np.asarray(basis, dtype=np.float64)
        if basis.shape != (BPS_POINTS, 3):
            raise ValueError(
                f"the BPS basis must have shape ({BPS_POINTS}, 3), got {basis.shape}; {FLAG_HINT}"
            )
        self.coarse = coarse.float().eval()
        self.refine = refine.float().eval()
        self.basis = basis
        self.files = dict(files or {})

    @classmethod
    def load(cls, weights: str | Path | None = None) -> GrabNet:
        """Load from the GrabNet folder (``--grabnet DIR``; None reads ``$HOIGEN_GRABNET_DIR``), searched
        recursively for ``coarsenet.pt``, ``refinenet.pt`` and ``bps.npz``. Loaded models are cached per process
        (keyed by the files and their modification times)."""
        files = find_grabnet_files(weights)
        key = tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in files.values())
        if key in _MODEL_CACHE:
            return _MODEL_CACHE[key]
        basis = load_bps_basis(files[BPS_FILE])
        coarse, refine = CoarseNet(), RefineNet()
        load_state_dict_strict(coarse, files[COARSENET_FILE], "CoarseNet")
        load_state_dict_strict(refine, files[REFINENET_FILE], "RefineNet")
        model = cls(coarse, refine, basis, files)
        if len(_MODEL_CACHE) >= 4:
            _MODEL_CACHE.pop(next(iter(_MODEL_CACHE)))
        _MODEL_CACHE[key] = model
        logger.info("loaded GrabNet from %s", ", ".join(str(p) for p in files.values()))
        return model


def describe_grabnet_dir(weights: str | Path | None) -> str:
    """One line for ``hoigen doctor``: the files found, checked fully (basis shape, strict checkpoint load).
    Raises the same errors as :meth:`GrabNet.load`."""
    model = GrabNet.load(weights)
    counts = {
        name: sum(p.numel() for p in net.parameters())
        for name, net in (("CoarseNet", model.coarse), ("RefineNet", model.refine))
    }
    root = Path(model.files[COARSENET_FILE]).parent
    return (
        f"{root}: CoarseNet {counts['CoarseNet'] / 1e6:.1f} M, RefineNet {counts['RefineNet'] / 1e6:.1f} M parameters "
        f"(strict load), BPS basis {model.basis.shape[0]} points — enables --grasp grabnet (with --hand mano)"
    )


# -- sampling ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GrabNetProposals:
    """One batch of GrabNet outputs (N = batch size), before the quality gate.

    Attributes:
        params: (N) refined grasps, object canonical frame (betas 0).
        coarse: (N) CoarseNet's grasps before refinement, object canonical frame.
        params_grabnet: (N) refined grasps in the GrabNet frame (the rotated object's frame).
        rotations: (N, 3, 3) GrabNet frame = ``rotations[i]`` @ object frame.
        z: (N, 16) latent codes.
    """

    params: HandParams
    coarse: HandParams
    params_grabnet: HandParams
    rotations: np.ndarray
    z: np.ndarray


class GrabNetSampler:
    """Samples GrabNet grasps of one object with a MANO hand (reusable across calls); the counterpart of
    :class:`~hoigen.grasping.contact.ContactGraspSampler`.

    Args:
        obj: the ObjectAsset (canonical frame, metres).
        hand: a MANO right hand (``--hand mano``); anything else is a ValueError.
        config: the grasp config: ``candidates`` per batch, ``max_attempts`` batches, the quality gate;
            ``exclude_below`` drops grasps whose palm is more than 60° below the object's horizon.
        weights: the GrabNet folder, or a loaded :class:`GrabNet`; None uses ``config.grabnet`` or
            ``$HOIGEN_GRABNET_DIR``.
        rotate: the random rotation applied to the object before GrabNet sees it: ``full`` (uniform, as GrabNet's
            demo), ``up`` (about the object's up axis) or ``none``.
        repair: try a small penetration repair (open the offending finger, push the palm out) on candidates that
            fail the gate.
        batch_size: candidates per batch (default ``config.candidates``).
        sdf: the object's distance field, if already built.
    """

    def __init__(
        self,
        obj,
        hand: HandModel,
        config: GraspConfig,
        weights: str | Path | GrabNet | None = None,
        *,
        rotate: str = "full",
        repair: bool = True,
        batch_size: int | None = None,
        sdf: SurfaceSDF | None = None,
    ):
        check_grabnet_hand(hand)
        if rotate not in ROTATE_MODES:
            raise ValueError(f"rotate must be one of {list(ROTATE_MODES)}, got {rotate!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.obj = obj
        self.hand = hand
        self.config = config
        self.rotate = rotate
        self.repair = repair
        self.batch_size = int(batch_size or config.candidates)
        if isinstance(weights, GrabNet):
            self.model = weights
        else:
            self.model = GrabNet.load(
                weights if weights is not None else (getattr(config, "grabnet", "") or None)
            )
        self.problem = grabnet_size_problem(obj.mesh)
        self._sdf = sdf
        self.points = object_points(obj.mesh) if self.problem is None else None
        self.tree = cKDTree(self.points) if self.points is not None else None
        self.layer = TorchManoLayer(hand.data)
        self.labels = hand.part_labels
        self.rest_wrist = hand.rest_joints()[0]

    @property
    def sdf(self) -> SurfaceSDF:
        if self._sdf is None:
            self._sdf = SurfaceSDF(self.obj.mesh, spacing=self.config.sdf_spacing_mm / 1000.0)
        return self._sdf

    # -- the networks -------------------------------------------------------------------------------------------
    def _rotations(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.rotate == "none":
            return np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
        if self.rotate == "up":
            from hoigen.geometry.rotations import rotation_about

            return rotation_about(self.obj.up, rng.uniform(0.0, 2.0 * np.pi, n))
        from scipy.spatial.transform import Rotation

        q = rng.normal(size=(n, 4))
        return Rotation.from_quat(q / np.linalg.norm(q, axis=1, keepdims=True)).as_matrix()

    def _distances(self, verts: torch.Tensor, rotations: np.ndarray) -> torch.Tensor:
        """(B, 778) distance of each GrabNet-frame hand vertex to the nearest object point."""
        v = verts.detach().double().numpy()
        v_obj = np.einsum("bvc,bcd->bvd", v, rotations)  # rows: R^T v
        dist = self.tree.query(v_obj.reshape(-1, 3))[0].reshape(v.shape[:2])
        return torch.from_numpy(dist).float()

    def _to_object_frame(self, rotmats: np.ndarray, transl: np.ndarray, rotations: np.ndarray) -> HandParams:
        """GrabNet-frame rotations (B, 16, 3, 3) and translations (B, 3) -> object-frame params (betas 0)."""
        rt = np.transpose(rotations, (0, 2, 1))
        wrist = np.einsum("bij,bj->bi", rt, transl + self.rest_wrist) - self.rest_wrist
        b = len(transl)
        return HandParams(
            matrix_to_axis_angle(rt @ rotmats[:, 0]),
            matrix_to_axis_angle(rotmats[:, 1:]).reshape(b, 45),
            wrist,
            np.zeros((b, NUM_BETAS)),
        )

    def generate(self, rng: np.random.Generator, n: int | None = None) -> GrabNetProposals:
        """``n`` (default ``batch_size``) GrabNet grasps, ungated. Uses ``rng`` for the object rotations and the
        seed of the ``torch.Generator`` that draws ``z ~ N(0, I)``."""
        if self.problem is not None:
            raise GraspError(0, f"GrabNet cannot grasp {self.obj.id}: {self.problem}")
        n = self.batch_size if n is None else int(n)
        rotations = self._rotations(rng, n)
        generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        z = torch.randn(n, self.model.coarse.latent_dim, generator=generator)
        queries = np.einsum("kc,bcd->bkd", self.model.basis, rotations)  # rows: R^T b
        bps = self.tree.query(queries.reshape(-1, 3))[0].reshape(n, -1)
        with torch.no_grad():
            pose6d, transl = self.model.coarse.decode(z, torch.from_numpy(bps).float())
            coarse_rot = rot6d_to_matrix(pose6d.reshape(n, NUM_JOINTS, 6))
            start = matrix_to_rot6d(coarse_rot).reshape(n, POSE_6D)
            dist = self._distances(self.layer(coarse_rot, transl), rotations)

            def distances(p6: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return self._distances(
                    self.layer(rot6d_to_matrix(p6.reshape(n, NUM_JOINTS, 6)), t), rotations
                )

            pose6d, transl_r = self.model.refine(dist, start, transl, distances)
            rot = rot6d_to_matrix(pose6d.reshape(n, NUM_JOINTS, 6))
        rot_np = rot.double().numpy()
        transl_np = transl_r.double().numpy()
        eye = np.broadcast_to(np.eye(3), rotations.shape)
        return GrabNetProposals(
            params=self._to_object_frame(rot_np, transl_np, rotations),
            coarse=self._to_object_frame(coarse_rot.double().numpy(), transl.double().numpy(), rotations),
            params_grabnet=self._to_object_frame(rot_np, transl_np, eye),
            rotations=rotations,
            z=z.double().numpy(),
        )

    # -- gate -----------------------------------------------------------------------------------------------------
    def _metrics(self, params: HandParams, verts: np.ndarray | None = None) -> dict:
        """Gate metrics plus ``score`` of one grasp; ``verts`` (778, 3) its posed vertices if already known."""
        if verts is None:
            verts = lbs(self.hand.data, params).vertices[0]
        m = grasp_metrics(
            verts, self.hand.faces, self.labels, self.sdf, self.config.contact_threshold_mm / 1000.0
        )
        m["score"] = score(m)
        return m

    def _from_below(self, verts: np.ndarray) -> bool:
        """Whether the palm centre of the posed hand ``verts`` (778, 3) lies more than 60° below the horizon."""
        if not self.config.exclude_below:
            return False
        palm = verts[self.labels == 0].mean(axis=0)
        norm = float(np.linalg.norm(palm))
        return norm > 1e-9 and float(palm @ self.obj.up) / norm < -0.5

    def _repair(self, params: HandParams, tolerance: float = 0.001, steps: int = 6) -> HandParams:
        """Small de-penetration (see ``contact.back_off_penetration``), opening fingers by 20 % a step."""
        return back_off_penetration(
            params, lambda p: lbs(self.hand.data, p).vertices[0], self.sdf, self.labels, steps, tolerance, 0.8
        )

    def sample(self, rng: np.random.Generator) -> Grasp:
        """The best gate-passing GrabNet grasp (method ``grabnet``), or :class:`GraspError` after
        ``max_attempts`` batches (or at once for an object GrabNet cannot grasp at its real size)."""
        cfg = self.config
        if self.problem is not None:
            raise GraspError(0, f"GrabNet cannot grasp {self.obj.id}: {self.problem}")
        gate = GateSelection(cfg)
        below = 0
        for _attempt in range(cfg.max_attempts):
            batch = self.generate(rng)
            verts = lbs(self.hand.data, batch.params).vertices
            gate.new_attempt()
            for i in range(batch.params.batch_size):
                gate.tried += 1
                params = batch.params[i]
                if self._from_below(verts[i]):
                    below += 1
                    continue
                metrics, repaired = self._metrics(params, verts[i]), False
                if not cfg.passes(metrics) and self.repair and metrics["max_penetration_mm"] > 1.0:
                    fixed = self._repair(params)
                    fixed_metrics = self._metrics(fixed)
                    if cfg.passes(fixed_metrics) or fixed_metrics["score"] > metrics["score"]:
                        params, metrics, repaired = fixed, fixed_metrics, True
                info = {
                    "grabnet_rotation": batch.rotations[i].tolist(),
                    "z": batch.z[i].tolist(),
                    "repaired": repaired,
                    "rotate": self.rotate,
                }
                gate.offer(params, metrics, info)
            if gate.best is not None:
                params, metrics, info = gate.best
                return Grasp(
                    params, metrics, "grabnet", self.hand.name, self.obj.id, info, gate.tried, gate.passed
                )
        tried = gate.tried
        detail = gate.failure_detail()
        if detail is None:
            detail = f"{below} candidates approached from below" if below else "no candidate was evaluated"
        elif below:
            detail += f"; {below} approached from below"
        raise GraspError(
            tried,
            f"no GrabNet grasp of {self.obj.id} passed the quality gate after {tried} candidates ({detail}); "
            "relax the gate (e.g. min_fingers_in_contact) or raise max_attempts",
        )
