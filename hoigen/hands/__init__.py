"""Hands: MANO-parameterised right hands (see :mod:`hoigen.hands.model` for the conventions).

Two models share one interface: hoigen's built-in hand (no licensed data, the default; version 2
``hoigen-builtin-v2`` unless ``builtin-v1`` is asked for) and MANO through smplx (the user's ``MANO_RIGHT.pkl``).
Importing this package loads numpy only; torch and smplx are imported when a MANO hand is built.
"""

from __future__ import annotations

from pathlib import Path

from hoigen.hands.builtin import BuiltinHand
from hoigen.hands.model import (
    FINGER_JOINTS,
    FINGERS,
    OPENPOSE_NAMES,
    HandModel,
    HandModelData,
    HandOutput,
    HandParams,
)

HAND_KINDS = ("builtin", "builtin-v1", "builtin-v2", "mano")

__all__ = [
    "FINGERS",
    "FINGER_JOINTS",
    "HAND_KINDS",
    "OPENPOSE_NAMES",
    "BuiltinHand",
    "HandModel",
    "HandModelData",
    "HandOutput",
    "HandParams",
    "load_hand",
]


def load_hand(kind: str = "builtin", mano: str | Path | None = None, forearm: bool = False) -> HandModel:
    """Build a hand model.

    Args:
        kind: ``"builtin"`` (hoigen's own hand, the current version: v2), ``"builtin-v1"`` / ``"builtin-v2"`` (a
            given version) or ``"mano"`` (smplx with the user's ``MANO_RIGHT.pkl``).
        mano: for ``"mano"``: the ``.pkl`` or a directory holding it; None reads ``$HOIGEN_MANO_DIR``.
        forearm: carry the forearm stub for renders (built-in v2 only; the hand's own mesh is unchanged).
    """
    if forearm and kind not in ("builtin", "builtin-v2"):
        raise ValueError(
            f"the forearm stub exists only for the built-in v2 hand (--hand builtin or builtin-v2), not {kind!r}; "
            "drop --forearm"
        )
    if kind == "builtin":
        return BuiltinHand(forearm=forearm)
    if kind in ("builtin-v1", "builtin-v2"):
        return BuiltinHand(version=int(kind[-1]), forearm=forearm)
    if kind == "mano":
        from hoigen.hands.mano import ManoHand

        return ManoHand(mano)
    raise ValueError(f"unknown hand kind {kind!r}; choose one of {list(HAND_KINDS)}")
