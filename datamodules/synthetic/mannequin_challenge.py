"""Small clips in the Mannequin Challenge layout, ray-cast from a known scene.

Each clip is a textured room (floor, walls, a few static objects) with 2-4 people-like articulated
figures (spheres chained into head, torso, arms and legs) seen by a camera that slides sideways
with a slight yaw. Train clips hold their people frozen, as in the mannequin videos; validation
and test clips make them walk and swing their limbs. Every frame comes with its exact z-depth
(standing in for MVS depth) and human mask, so the depth of people is learnable from context
(where a figure meets the floor) and the environment's depth from parallax. Each frame also gets
the figures' 18 COCO keypoints as OpenPose writes them (visible joints only, c = 0.9), for the
IDCMK model.

Written layout (see datamodules/mannequin_challenge.py)::

    <root>/<split>/<clip>.txt                       # URL line, then 19 columns per frame
    <root>/<split>/<clip>/frames/<timestamp>.png    # RGB frame
    <root>/<split>/<clip>/depth/<timestamp>.npy     # float32 z-depth in metres, 0 = unknown
    <root>/<split>/<clip>/masks/<timestamp>.png     # uint8, 255 = human
    <root>/<split>/<clip>/keypoints/<timestamp>_keypoints.json   # OpenPose JSON, COCO-18
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from core.io import atomic_path, atomic_write_text

FRAME_PERIOD_US = 33367  # 29.97 fps, as YouTube sources mostly are

# Index of each surface kind in the label map the ray caster returns.
_ENV, _HUMAN = 0, 1


def _look_rotation(yaw: float, pitch: float) -> np.ndarray:
    """Camera-to-world rotation of a camera (x right, y down, z forward) turned by yaw then pitch."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return r_yaw @ r_pitch


def _figure_spheres(base: np.ndarray, height: float, phase: float, swing: float) -> np.ndarray:
    """Spheres (x, y, z, r) of an articulated figure standing at ``base`` (on the floor, y down).

    ``swing`` is the limb amplitude and ``phase`` the gait phase: legs and arms rotate about the hip
    and shoulders in the x-z plane of the figure."""
    s = height / 1.75
    up = np.array([0.0, -1.0, 0.0])
    hip = base + up * 0.9 * s
    shoulder = base + up * 1.45 * s
    spheres = [(base + up * 1.63 * s, 0.12 * s)]  # head
    for k in range(4):  # torso
        spheres.append((hip + up * (0.12 + 0.14 * k) * s, (0.17 - 0.01 * k) * s))
    for side in (-1.0, 1.0):
        leg = swing * np.sin(phase) * side
        arm = -swing * np.sin(phase) * side
        lateral = np.array([0.11 * s * side, 0.0, 0.0])
        for k in range(7):  # legs: hip to foot, 0.9 * s long
            f = (k + 0.5) / 7
            spheres.append((hip + lateral + 0.9 * s * f * np.array([0.0, np.cos(leg), np.sin(leg)]), 0.09 * s))
        lateral = np.array([0.24 * s * side, 0.0, 0.0])
        for k in range(5):  # arms: shoulder to hand, 0.65 * s long
            f = (k + 0.5) / 5
            spheres.append((shoulder + lateral + 0.65 * s * f * np.array([0.0, np.cos(arm), np.sin(arm)]), 0.07 * s))
    return np.array([[*c, r] for c, r in spheres])


def _figure_joints(base: np.ndarray, height: float, phase: float, swing: float) -> np.ndarray:
    """The 18 COCO keypoints (18, 3) of the figure ``_figure_spheres`` builds, facing the camera
    (-z), so its right side is at -x: nose, neck, R shoulder/elbow/wrist, L shoulder/elbow/wrist,
    R hip/knee/ankle, L hip/knee/ankle, R/L eye, R/L ear."""
    s = height / 1.75
    up = np.array([0.0, -1.0, 0.0])
    head, hip, shoulder = base + up * 1.63 * s, base + up * 0.9 * s, base + up * 1.45 * s
    joints = {0: head + np.array([0.0, 0.0, -0.12 * s]), 1: shoulder}
    for side, (sh, el, wr, hp, kn, an, eye, ear) in (
        (-1.0, (2, 3, 4, 8, 9, 10, 14, 16)),
        (1.0, (5, 6, 7, 11, 12, 13, 15, 17)),
    ):
        leg, arm = swing * np.sin(phase) * side, -swing * np.sin(phase) * side
        s_point = shoulder + np.array([0.24 * s * side, 0.0, 0.0])
        h_point = hip + np.array([0.11 * s * side, 0.0, 0.0])
        arm_dir, leg_dir = np.array([0.0, np.cos(arm), np.sin(arm)]), np.array([0.0, np.cos(leg), np.sin(leg)])
        joints.update(
            {
                sh: s_point,
                el: s_point + 0.325 * s * arm_dir,
                wr: s_point + 0.65 * s * arm_dir,
                hp: h_point,
                kn: h_point + 0.45 * s * leg_dir,
                an: h_point + 0.9 * s * leg_dir,
                eye: head + np.array([0.045 * s * side, -0.03 * s, -0.1 * s]),
                ear: head + np.array([0.12 * s * side, 0.0, 0.0]),
            }
        )
    return np.array([joints[k] for k in range(18)])


class _Scene:
    """A random room with static objects and people; renders colour, z-depth and human masks."""

    def __init__(self, rng: np.random.Generator, moving: bool):
        self.floor_y = rng.uniform(1.3, 1.8)
        self.ceiling_y = self.floor_y - rng.uniform(2.6, 3.2)
        self.wall_x = rng.uniform(2.5, 4.0)
        self.wall_z = rng.uniform(6.0, 10.0)
        self.back_z = -2.0
        # Per-plane texture: base colour, and two sine frequencies (cycles per metre) per in-plane axis.
        self.plane_colour = rng.uniform(0.25, 0.85, size=(6, 3))
        self.plane_freq = rng.uniform(0.6, 2.5, size=(6, 2, 2))
        self.plane_phase = rng.uniform(0, 2 * np.pi, size=(6, 2, 2))
        objects = []
        for _ in range(rng.integers(1, 4)):
            r = rng.uniform(0.3, 0.7)
            objects.append(
                [rng.uniform(-self.wall_x + r, self.wall_x - r), self.floor_y - r, rng.uniform(3.0, self.wall_z - r), r]
            )
        self.objects = np.array(objects)
        self.object_colour = rng.uniform(0.2, 0.9, size=(len(objects), 3))
        self.people = []
        for _ in range(rng.integers(2, 5)):
            self.people.append(
                {
                    "x": rng.uniform(-1.8, 1.8),
                    "z": rng.uniform(1.6, 5.0),
                    "height": rng.uniform(1.5, 1.9),
                    "phase": rng.uniform(0, 2 * np.pi),
                    "swing": rng.uniform(0.1, 0.5),
                    "colour": rng.uniform(0.15, 0.95, size=(2, 3)),
                    "stripes": rng.uniform(6.0, 14.0),
                    "velocity": rng.uniform(-0.04, 0.04, size=2) if moving else np.zeros(2),
                    "gait": rng.uniform(0.3, 0.6) if moving else 0.0,
                }
            )

    def people_spheres(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        spheres, owner = [], []
        for i, p in enumerate(self.people):
            base = np.array([p["x"] + p["velocity"][0] * frame, self.floor_y, p["z"] + p["velocity"][1] * frame])
            s = _figure_spheres(base, p["height"], p["phase"] + p["gait"] * frame, p["swing"])
            spheres.append(s)
            owner += [i] * len(s)
        return np.concatenate(spheres), np.array(owner)

    def people_joints(self, frame: int) -> np.ndarray:
        """(people, 18, 3) world positions of every figure's COCO keypoints at ``frame``."""
        out = []
        for p in self.people:
            base = np.array([p["x"] + p["velocity"][0] * frame, self.floor_y, p["z"] + p["velocity"][1] * frame])
            out.append(_figure_joints(base, p["height"], p["phase"] + p["gait"] * frame, p["swing"]))
        return np.array(out)

    def _plane_texture(self, plane: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        f, ph = self.plane_freq[plane], self.plane_phase[plane]
        # Smooth, non-repeating-looking texture (no hard edges that alias at grazing angles).
        pattern = (
            np.sin(2 * np.pi * f[0, 0] * u + ph[0, 0]) * np.sin(2 * np.pi * f[0, 1] * v + ph[0, 1])
            + 0.6 * np.sin(2 * np.pi * f[1, 0] * (u + 0.7 * v) + ph[1, 0])
            + 0.6 * np.sin(2 * np.pi * f[1, 1] * (0.6 * u - v) + 3.0 * np.sin(1.3 * u) + ph[1, 1])
        )
        return np.clip(self.plane_colour[plane][None] * (1.0 + 0.35 * pattern[:, None]), 0, 1)

    def cast(self, origin: np.ndarray, dirs: np.ndarray, frame: int):
        """Colour (N, 3), ray parameter t (N,) and surface kind (N,) for unit world rays ``dirs``."""
        n = len(dirs)
        t_best = np.full(n, np.inf)
        colour = np.zeros((n, 3))
        kind = np.full(n, _ENV)
        # Room planes: 0 floor, 1 ceiling, 2 left, 3 right, 4 far wall, 5 near wall.
        planes = [
            (1, self.floor_y),
            (1, self.ceiling_y),
            (0, -self.wall_x),
            (0, self.wall_x),
            (2, self.wall_z),
            (2, self.back_z),
        ]
        for index, (axis, value) in enumerate(planes):
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (value - origin[axis]) / dirs[:, axis]
            hit = (t > 1e-6) & (t < t_best)
            if not hit.any():
                continue
            points = origin[None] + t[hit, None] * dirs[hit]
            u_axis, v_axis = [a for a in range(3) if a != axis]
            colour[hit] = self._plane_texture(index, points[:, u_axis], points[:, v_axis])
            t_best[hit] = t[hit]
        light = np.array([0.3, -0.8, -0.5]) / np.linalg.norm([0.3, -0.8, -0.5])
        people, owner = self.people_spheres(frame)
        for group, spheres in (("object", self.objects), ("person", people)):
            for k, (cx, cy, cz, r) in enumerate(spheres):
                oc = origin - np.array([cx, cy, cz])
                b = dirs @ oc
                disc = b * b - (oc @ oc - r * r)
                ok = disc > 0
                t = np.where(ok, -b - np.sqrt(np.where(ok, disc, 0.0)), np.inf)
                hit = ok & (t > 1e-6) & (t < t_best)
                if not hit.any():
                    continue
                points = origin[None] + t[hit, None] * dirs[hit]
                normal = (points - np.array([cx, cy, cz])) / r
                shade = 0.55 + 0.45 * np.clip(normal @ light, 0, 1)
                if group == "object":
                    base = np.broadcast_to(self.object_colour[k], (hit.sum(), 3))
                    kind[hit] = _ENV
                else:
                    p = self.people[owner[k]]
                    stripe = (np.sin(2 * np.pi * p["stripes"] * points[:, 1]) > 0).astype(int)
                    base = p["colour"][stripe]
                    kind[hit] = _HUMAN
                colour[hit] = base * shade[:, None]
                t_best[hit] = t[hit]
        return colour, t_best, kind


def render_frame(
    scene: _Scene,
    K: np.ndarray,
    cam_to_world: np.ndarray,
    centre: np.ndarray,
    width: int,
    height: int,
    frame: int,
    supersample: int = 2,
):
    """RGB uint8 (H, W, 3), z-depth float32 (H, W) and human mask uint8 (H, W) of one frame.

    Colour is averaged over ``supersample``^2 rays per pixel (anti-aliasing, so optical flow sees
    smooth texture); depth and mask are exact at pixel centres."""
    k_inv = np.linalg.inv(K)

    def rays(step: int):
        offsets = (np.arange(step) + 0.5) / step
        xs = (np.arange(width)[:, None] + offsets[None]).ravel()
        ys = (np.arange(height)[:, None] + offsets[None]).ravel()
        gy, gx = np.meshgrid(ys, xs, indexing="ij")
        cam = k_inv @ np.stack([gx.ravel(), gy.ravel(), np.ones(gx.size)])
        return cam

    cam = rays(supersample)
    world = (cam_to_world @ cam).T
    colour, _, _ = scene.cast(centre, world / np.linalg.norm(world, axis=1, keepdims=True), frame)
    colour = colour.reshape(height, supersample, width, supersample, 3).mean(axis=(1, 3))
    cam = rays(1)
    world = (cam_to_world @ cam).T
    norm = np.linalg.norm(world, axis=1)
    _, t, kind = scene.cast(centre, world / norm[:, None], frame)
    depth = (t / norm).reshape(height, width)  # ray (x, y, 1) has z = 1, so z = t / |ray|
    image = np.clip(colour * 255 + 0.5, 0, 255).astype(np.uint8)
    mask = (kind.reshape(height, width) == _HUMAN).astype(np.uint8) * 255
    return image, depth.astype(np.float32), mask


def openpose_keypoints(
    scene: _Scene, K: np.ndarray, world_to_cam: np.ndarray, depth: np.ndarray, mask: np.ndarray, frame: int
) -> dict:
    """The OpenPose JSON record of one frame: each figure with a visible joint, its 18 COCO keypoints
    as (x, y, c) in pixel coordinates (pixel centres at integers), c = 0.9 where the joint projects
    into the image onto a human pixel no more than 0.3 m behind the visible surface, else 0, 0, 0."""
    h, w = depth.shape
    people = []
    for joints in scene.people_joints(frame):
        cam = (world_to_cam[:, :3] @ joints.T + world_to_cam[:, 3:]).T
        values, seen = [], False
        for x, y, z in cam:
            u, v = (K @ np.array([x, y, z]))[:2] / z if z > 1e-6 else (-1.0, -1.0)
            col, row = int(np.floor(u)), int(np.floor(v))
            visible = z > 1e-6 and 0 <= col < w and 0 <= row < h and mask[row, col] > 0 and z - depth[row, col] < 0.3
            values += [round(float(u) - 0.5, 3), round(float(v) - 0.5, 3), 0.9] if visible else [0.0, 0.0, 0.0]
            seen |= visible
        if seen:
            people.append(
                {
                    "person_id": [-1],
                    "pose_keypoints_2d": values,
                    "face_keypoints_2d": [],
                    "hand_left_keypoints_2d": [],
                    "hand_right_keypoints_2d": [],
                }
            )
    return {"version": 1.3, "people": people}


def _write_png(path: Path, image: np.ndarray) -> None:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


def write_clip(
    folder: Path, name: str, rng: np.random.Generator, moving: bool, frames: int, width: int, height: int
) -> None:
    """One clip: ``<folder>/<name>.txt`` and ``<folder>/<name>/{frames,depth,masks}/``."""
    scene = _Scene(rng, moving)
    fx = rng.uniform(0.75, 1.0)
    intrinsics = np.array([fx, fx * width / height, 0.5, 0.5])
    K = np.array([[width * intrinsics[0], 0, width * 0.5], [0, height * intrinsics[1], height * 0.5], [0, 0, 1]])
    start = np.array([rng.uniform(-1.0, 1.0), rng.uniform(-0.1, 0.1), rng.uniform(-0.5, 0.5)])
    velocity = np.array([rng.choice([-1, 1]) * rng.uniform(0.06, 0.12), 0.0, rng.uniform(-0.02, 0.02)])
    yaw0, yaw_rate = rng.uniform(-0.2, 0.2), rng.uniform(-0.01, 0.01)
    pitch = rng.uniform(0.0, 0.15)
    video_id = "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"), 11))
    lines = [f"https://www.youtube.com/watch?v={video_id}"]
    timestamp0 = int(rng.integers(0, 60_000_000))
    for i in range(frames):
        centre = start + velocity * i
        cam_to_world = _look_rotation(yaw0 + yaw_rate * i, pitch)
        rotation = cam_to_world.T
        translation = -rotation @ centre
        timestamp = timestamp0 + i * FRAME_PERIOD_US
        image, depth, mask = render_frame(scene, K, cam_to_world, centre, width, height, i)
        _write_png(folder / name / "frames" / f"{timestamp}.png", image)
        with atomic_path(folder / name / "depth" / f"{timestamp}.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, depth)
        _write_png(folder / name / "masks" / f"{timestamp}.png", mask)
        pose = np.concatenate([rotation, translation[:, None]], axis=1)
        record = openpose_keypoints(scene, K, pose, depth, mask, i)
        atomic_write_text(folder / name / "keypoints" / f"{timestamp}_keypoints.json", json.dumps(record))
        values = [str(timestamp), *(f"{v:.9f}" for v in intrinsics), "0.0", "0.0", *(f"{v:.9f}" for v in pose.ravel())]
        lines.append(" ".join(values))
    atomic_write_text(folder / f"{name}.txt", "\n".join(lines) + "\n")


def write_mannequin_challenge(
    root: str | Path,
    train_clips: int = 24,
    validation_clips: int = 6,
    test_clips: int = 6,
    frames_per_clip: int = 8,
    width: int = 128,
    height: int = 96,
    seed: int = 0,
) -> Path:
    """Write a small Mannequin-Challenge-layout data set under ``root``: frozen people in ``train``,
    moving people in ``validation`` and ``test``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count, moving in (
        ("train", train_clips, False),
        ("validation", validation_clips, True),
        ("test", test_clips, True),
    ):
        for _ in range(count):
            name = "".join(rng.choice(list("0123456789abcdef"), 16))
            write_clip(root / split, name, rng, moving, frames_per_clip, width, height)
    return root
