"""The hand model's skeleton: its 25 skin joints, the 16 rigid parts and the keypoint map.

Shared by the asset converter, the hand model, the pose sampler and the refit, so the
rig's naming lives in one place. Skin joints follow the WebXR hand convention: each
joint's -z axis points along its bone towards the fingertip, +y out of the back of the
hand (dorsal), x completes a right-handed frame, so flexion is a rotation about -x and
abduction towards the thumb a rotation about +y.
"""

from __future__ import annotations

import enum

import numpy as np

from tracker.types import Joint

#: Skin joint names in the asset's order (the WebXR generic hand's skin order).
SKIN_JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb-metacarpal",
    "thumb-phalanx-proximal",
    "thumb-phalanx-distal",
    "thumb-tip",
    *(
        f"{finger}-finger-{bone}"
        for finger in ("index", "middle", "ring", "pinky")
        for bone in ("metacarpal", "phalanx-proximal", "phalanx-intermediate", "phalanx-distal", "tip")
    ),
)
NUM_SKIN_JOINTS = len(SKIN_JOINT_NAMES)
SKIN_JOINT_INDEX = {name: i for i, name in enumerate(SKIN_JOINT_NAMES)}


def _skin_parent(name: str) -> int:
    if name == "wrist":
        return -1
    i = SKIN_JOINT_INDEX[name]
    if name.endswith("metacarpal"):
        return SKIN_JOINT_INDEX["wrist"]
    return i - 1


#: (25,) int32 parent skin joint of each skin joint (-1 for the wrist); parents precede children.
SKIN_JOINT_PARENTS = np.array([_skin_parent(n) for n in SKIN_JOINT_NAMES], dtype=np.int32)


class HandPart(enum.IntEnum):
    """Rigid parts for the per-part similarity refit: the palm and 15 finger bones."""

    PALM = 0
    THUMB_METACARPAL = 1
    THUMB_PROXIMAL = 2
    THUMB_DISTAL = 3
    INDEX_PROXIMAL = 4
    INDEX_INTERMEDIATE = 5
    INDEX_DISTAL = 6
    MIDDLE_PROXIMAL = 7
    MIDDLE_INTERMEDIATE = 8
    MIDDLE_DISTAL = 9
    RING_PROXIMAL = 10
    RING_INTERMEDIATE = 11
    RING_DISTAL = 12
    PINKY_PROXIMAL = 13
    PINKY_INTERMEDIATE = 14
    PINKY_DISTAL = 15


NUM_PARTS = len(HandPart)


def _part_of_skin_joint(name: str) -> HandPart:
    if name == "wrist" or (name.endswith("metacarpal") and not name.startswith("thumb")):
        return HandPart.PALM
    finger = name.split("-")[0].upper()
    bone = name.split("-")[-1]
    bone = {"metacarpal": "METACARPAL", "proximal": "PROXIMAL", "intermediate": "INTERMEDIATE"}.get(bone, "DISTAL")
    return HandPart[f"{finger}_{bone}"]  # tips move with the distal phalanx


#: (25,) int32 rigid part of each skin joint.
SKIN_JOINT_PART = np.array([int(_part_of_skin_joint(n)) for n in SKIN_JOINT_NAMES], dtype=np.int32)

#: The skin joint whose origin is each MediaPipe keypoint.
KEYPOINT_SKIN_JOINT: dict[Joint, str] = {
    Joint.WRIST: "wrist",
    Joint.THUMB_CMC: "thumb-metacarpal",
    Joint.THUMB_MCP: "thumb-phalanx-proximal",
    Joint.THUMB_IP: "thumb-phalanx-distal",
    Joint.THUMB_TIP: "thumb-tip",
    **{
        Joint[f"{f.upper()}_FINGER_{k}" if f != "pinky" else f"PINKY_{k}"]: f"{f}-finger-{bone}"
        for f in ("index", "middle", "ring", "pinky")
        for k, bone in (
            ("MCP", "phalanx-proximal"),
            ("PIP", "phalanx-intermediate"),
            ("DIP", "phalanx-distal"),
            ("TIP", "tip"),
        )
    },
}
#: (21,) int32 skin joint index of each keypoint, in Joint order.
KEYPOINT_SKIN_JOINT_INDEX = np.array(
    [SKIN_JOINT_INDEX[KEYPOINT_SKIN_JOINT[j]] for j in Joint], dtype=np.int32
)
