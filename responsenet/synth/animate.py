"""Animate a face photo: open the jaw and turn the head, and plan smooth head motion.

Pose convention (the one of MediaPipe's facial transformation matrix, checked against it in
tests/synth/test_animate.py): the matrix lives in a frame with x to the image's right, y up and z
toward the viewer; its rotation is ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``, angles in degrees.

- positive yaw: the face turns toward the image's right, i.e. to the subject's own left;
- positive pitch: the face turns down (chin toward the chest), as in a nod's downstroke;
- positive roll: the head tilts counter-clockwise on screen (top toward the image's left).

The head is a plane at depth ``f`` (focal length ``FOCAL_FRACTION`` x face height, about the photo
width) carrying an elliptic-paraboloid relief over the face, rotated about a pivot behind the face.
Without relief this is the homography ``K (R + (I - R) e3 e3^T) K^-1``; the relief adds the
parallax (nose against cheeks) that MediaPipe reads yaw and pitch from. Roll is an exact in-plane
rotation about the face centre. Every warp is one backward map sampled with ``cv2.remap``.
"""

from __future__ import annotations

import weakref

import numpy as np

from responsenet.synth.faces import FacePhoto

#: Largest absolute angle in degrees that :func:`plan_head_motion` produces, per axis.
LIMITS = {"yaw": 15.0, "pitch": 10.0, "roll": 8.0}
_RIGS: weakref.WeakKeyDictionary[FacePhoto, FaceRig] = weakref.WeakKeyDictionary()

#: Focal length as a multiple of the face (landmark box) height: about the photo's width.
FOCAL_FRACTION = 2.0
#: Height of the face relief (nose tip over the face outline), fraction of the face height.
RELIEF_FRACTION = 0.35
#: Distance of the rotation pivot behind the face plane, fraction of the face height.
PIVOT_FRACTION = 0.5
#: Chin drop at ``jaw_open = 1``, fraction of the face height.
JAW_DROP = 0.12
_STEP = 8  # pixels between the points where the (smooth) pose map is solved exactly
_UPPER_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
_FLIP_Y_Z = np.diag([1.0, -1.0, -1.0])  # MediaPipe's frame (y up, z to viewer) <-> image frame
_MOUTH_DARK = np.array([38, 12, 16], np.float32)
_MOUTH_EDGE = np.array([110, 45, 50], np.float32)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """float64 [3, 3] ``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (degrees) in MediaPipe's frame."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


class FaceRig:
    """One photo's precomputed maps; :meth:`render` reuses the last frame when nothing changed."""

    def __init__(self, photo: FacePhoto):
        self.image = np.ascontiguousarray(photo.image)
        height, width = self.image.shape[:2]
        x, y, box_w, box_h = photo.box
        self.centre = (x + box_w / 2.0, y + box_h / 2.0)
        self.focal, self.pivot = FOCAL_FRACTION * box_h, PIVOT_FRACTION * box_h
        self.relief = (RELIEF_FRACTION * box_h, 0.55 * box_w, 0.55 * box_h)
        self.drop = JAW_DROP * box_h
        # pose maps are solved at block centres and upsampled by cv2.resize, which aligns them
        cols = (np.arange(-(-width // _STEP)) + 0.5) * _STEP - 0.5
        rows = (np.arange(-(-height // _STEP)) + 0.5) * _STEP - 0.5
        self.coarse = np.meshgrid(cols, rows)
        self.jaw = JawField(photo)
        self._last: tuple[tuple[float, ...], np.ndarray] | None = None

    def render(self, jaw_open: float, yaw: float, pitch: float, roll: float) -> np.ndarray:
        """The animated frame, uint8 RGB [H, W, 3] (shared with the cache: do not modify)."""
        import cv2

        key = (min(max(float(jaw_open), 0.0), 1.0), float(yaw), float(pitch), float(roll))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        maps = self.pose_map(*key[1:])
        frame = self.image.copy() if maps is None else cv2.remap(
            self.image, *cv2.convertMaps(maps, None, cv2.CV_16SC2), cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE)
        if key[0] > 0:
            self.jaw.open_mouth(self.image, frame, maps, key[0] * self.drop, self.forward(key[1:]))
        self._last = (key, frame)
        return frame

    def pose_map(self, yaw: float, pitch: float, roll: float) -> np.ndarray | None:
        """float32 [H, W, 2] source (x, y) of every output pixel, or None for no rotation."""
        import cv2

        if yaw == 0 and pitch == 0 and roll == 0:
            return None
        forward = self.forward((yaw, pitch, roll))
        target_x, target_y = self.coarse
        src_x, src_y = target_x.copy(), target_y.copy()
        for _ in range(6):  # fixed point of src = target - (forward(src) - src)
            out_x, out_y = forward(src_x, src_y)
            src_x += target_x - out_x
            src_y += target_y - out_y
        coarse = np.dstack([src_x, src_y]).astype(np.float32)
        height, width = self.image.shape[:2]
        fine = cv2.resize(coarse, (coarse.shape[1] * _STEP, coarse.shape[0] * _STEP),
                          interpolation=cv2.INTER_LINEAR)
        return fine[:height, :width]

    def forward(self, pose: tuple[float, float, float]):
        """``f(x, y) -> (x', y')``: where the head rotation moves photo pixels (float arrays)."""
        rot = _FLIP_Y_Z @ rotation_matrix(*pose) @ _FLIP_Y_Z
        (cx, cy), focal, pivot = self.centre, self.focal, self.pivot
        height, semi_x, semi_y = self.relief

        def apply(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            bulge = np.clip(1.0 - ((x - cx) / semi_x) ** 2 - ((y - cy) / semi_y) ** 2, 0, None)
            depth = focal - height * bulge  # the face's centre is nearer the camera
            px, py, pz = (x - cx) * depth / focal, (y - cy) * depth / focal, depth - focal - pivot
            qx = rot[0, 0] * px + rot[0, 1] * py + rot[0, 2] * pz
            qy = rot[1, 0] * px + rot[1, 1] * py + rot[1, 2] * pz
            qz = rot[2, 0] * px + rot[2, 1] * py + rot[2, 2] * pz + focal + pivot
            return cx + focal * qx / qz, cy + focal * qy / qz
        return apply


class JawField:
    """Where and how far the lower face moves when the jaw opens, in face-aligned coordinates.

    ``weight`` [h, w] (0..1) scales the drop along the face's down axis; ``below`` [h, w] is the
    distance in pixels below the upper inner lip line. Both cover only ``rect`` (x, y, w, h).
    """

    def __init__(self, photo: FacePhoto):
        marks = photo.landmarks.astype(np.float64)
        left, right = marks[78], marks[308]
        self.across = (right - left) / np.linalg.norm(right - left)
        self.down = np.array([-self.across[1], self.across[0]])
        self.origin = (left + right) / 2.0
        lip = (marks[list(_UPPER_INNER_LIP)] - self.origin) @ np.stack([self.across, self.down]).T
        lip = lip[np.argsort(lip[:, 0])]
        half = (lip[-1, 0] - lip[0, 0]) / 2.0
        face_h = photo.box[3]
        chin = float((marks[152] - self.origin) @ self.down) + 0.04 * face_h
        neck, jaw = 0.3 * face_h, max(chin - float(np.interp(0.0, lip[:, 0], lip[:, 1])), 1.0)
        self.rect = _rect_around(self.origin, self.across, self.down, 1.8 * half,
                                 lip[:, 1].min() - 2, chin + neck, photo.image.shape)
        x, y, w, h = self.rect
        grid_y, grid_x = np.mgrid[y:y + h, x:x + w].astype(np.float64)
        a = (grid_x - self.origin[0]) * self.across[0] + (grid_y - self.origin[1]) * self.across[1]
        b = (grid_x - self.origin[0]) * self.down[0] + (grid_y - self.origin[1]) * self.down[1]
        below = b - np.interp(a, lip[:, 0], lip[:, 1])
        spread = half * (1.05 + 0.6 * np.clip(below / jaw, 0.0, 1.0))
        weight = np.clip(1.0 - (a / spread) ** 2, 0.0, None)
        fade = np.clip((b - chin) / neck, 0.0, 1.0)
        weight *= np.where(below < 0, 0.0, 0.5 * (1.0 + np.cos(np.pi * fade)))
        self.fields = np.dstack([weight, below]).astype(np.float32)
        self.soft = max(1.0, face_h / 120.0)

    def open_mouth(self, image: np.ndarray, frame: np.ndarray, maps: np.ndarray | None,
                   drop: float, forward) -> None:
        """Redraw in ``frame`` (in place) the lower face moved down by ``drop`` pixels.

        Args:
            image: uint8 RGB [H, W, 3], the photo.
            frame: uint8 RGB [H, W, 3], the photo already warped by ``maps``.
            maps: float32 [H, W, 2] pose map of :meth:`FaceRig.pose_map`, or None.
            drop: chin drop in pixels.
            forward: the pose's forward map, to find where the moving region lands.
        """
        import cv2

        x, y, w, h = self.rect if maps is None else _moved_rect(self.rect, forward, frame.shape)
        if w <= 0 or h <= 0:
            return
        if maps is None:
            grid_y, grid_x = np.mgrid[y:y + h, x:x + w].astype(np.float32)
        else:
            grid_x, grid_y = maps[y:y + h, x:x + w, 0], maps[y:y + h, x:x + w, 1]
        local = cv2.remap(self.fields, grid_x - self.rect[0], grid_y - self.rect[1],
                          cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        weight, below = local[..., 0], local[..., 1]
        gap = drop * weight
        patch = cv2.remap(image, grid_x - gap * np.float32(self.down[0]),
                          grid_y - gap * np.float32(self.down[1]), cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        inside = np.minimum(below, gap - below)
        alpha = np.clip((inside + 0.5) / self.soft, 0, 1) * np.clip(gap / (2 * self.soft), 0, 1)
        middle = np.clip(1.0 - np.abs(2.0 * below / np.maximum(gap, 1e-3) - 1.0), 0, 1)
        colour = _MOUTH_EDGE + (_MOUTH_DARK - _MOUTH_EDGE) * np.sqrt(middle)[..., None]
        patch += (colour - patch) * alpha[..., None]
        frame[y:y + h, x:x + w] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)


def _rect_around(origin: np.ndarray, across: np.ndarray, down: np.ndarray, half_width: float,
                 top: float, bottom: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Pixel box (x, y, w, h), clipped to ``shape``, of a face-aligned rectangle."""
    corners = np.array([origin + a * across + b * down
                        for a in (-half_width, half_width) for b in (top, bottom)])
    return _clip_box(corners, shape)


def _moved_rect(rect: tuple[int, int, int, int], forward,
                shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Pixel box, clipped to ``shape``, of where ``forward`` moves ``rect``'s outline."""
    x, y, w, h = rect
    ts = np.linspace(0.0, 1.0, 17)
    xs = np.concatenate([x + ts * w, x + ts * w, np.full_like(ts, x), np.full_like(ts, x + w)])
    ys = np.concatenate([np.full_like(ts, y), np.full_like(ts, y + h), y + ts * h, y + ts * h])
    return _clip_box(np.stack(forward(xs, ys), axis=1), shape, margin=2)


def _clip_box(points: np.ndarray, shape: tuple[int, ...],
              margin: int = 0) -> tuple[int, int, int, int]:
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + margin + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def rig_for(photo: FacePhoto) -> FaceRig:
    """The (cached) :class:`FaceRig` of ``photo``: its precomputed maps."""
    rig = _RIGS.get(photo)
    if rig is None:
        rig = _RIGS[photo] = FaceRig(photo)
    return rig


def animate_face(photo: FacePhoto, jaw_open: float, yaw: float, pitch: float,
                 roll: float) -> np.ndarray:
    """One frame of ``photo`` with the jaw opened and the head turned.

    Args:
        photo: the face to animate.
        jaw_open: 0 (closed, the photo as is) to 1 (wide open: the chin drops ~12% of the face
            height); values outside are clipped.
        yaw, pitch, roll: head rotation in degrees (module docstring for the convention).

    Returns:
        uint8 RGB [H, W, 3], the size of ``photo.image``.
    """
    return rig_for(photo).render(jaw_open, yaw, pitch, roll).copy()


def pose_from_matrix(matrix: np.ndarray) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees of a 4x4 (or 3x3) transform, ``R = Rz Ry Rx``.

    Inverse of :func:`rotation_matrix` for |yaw| < 90; scale in the matrix is divided out. Use it
    on MediaPipe's facial transformation matrix.
    """
    rot = np.asarray(matrix, dtype=np.float64)[:3, :3]
    rot = rot / np.linalg.norm(rot, axis=0, keepdims=True)
    yaw = np.arctan2(-rot[2, 0], np.hypot(rot[2, 1], rot[2, 2]))
    pitch = np.arctan2(rot[2, 1], rot[2, 2])
    roll = np.arctan2(rot[1, 0], rot[0, 0])
    return float(np.degrees(yaw)), float(np.degrees(pitch)), float(np.degrees(roll))


def plan_head_motion(rng: np.random.Generator, n_frames: int, fps: float,
                     speaking: np.ndarray) -> dict[str, np.ndarray]:
    """Smooth, small head motion for one participant, deterministic for a given ``rng`` state.

    A slow drift on every axis; while speaking, slower and wider turns (yaw); while listening,
    bursts of nods (pitch going down and back up at ~2 Hz, 4-8 degrees deep). Bounded softly by
    :data:`LIMITS`.

    Args:
        rng: the random generator (its state advances).
        n_frames: number of video frames.
        fps: frames per second.
        speaking: bool [n_frames], True where this participant speaks.

    Returns:
        ``{"yaw", "pitch", "roll"}``: float32 [n_frames] each, degrees per frame.
    """
    speaking = np.asarray(speaking, dtype=bool)
    if speaking.shape != (n_frames,):
        raise ValueError(f"speaking must be bool [{n_frames}], got shape {speaking.shape}")
    times = np.arange(n_frames) / fps
    talk = _smooth(speaking.astype(np.float64), round(0.4 * fps))
    yaw = _drift(rng, times, 3.0, 0.15) + talk * _drift(rng, times, 7.0, 0.25)
    pitch = _drift(rng, times, 2.0, 0.2) + _nods(rng, times, speaking) * (1.0 - talk)
    roll = _drift(rng, times, 2.5, 0.12) + talk * _drift(rng, times, 2.0, 0.3)
    axes = {"yaw": yaw, "pitch": pitch, "roll": roll}
    return {k: (LIMITS[k] * np.tanh(v / LIMITS[k])).astype(np.float32) for k, v in axes.items()}


def _drift(rng: np.random.Generator, times: np.ndarray, amplitude: float,
           max_hz: float) -> np.ndarray:
    """A sum of three sinusoids up to ``max_hz`` with random phases; peak about ``amplitude``."""
    out = np.zeros_like(times)
    for _ in range(3):
        freq = rng.uniform(0.3, 1.0) * max_hz
        out += np.sin(2 * np.pi * freq * times + rng.uniform(0, 2 * np.pi))
    return out * amplitude / 2.0


def _nods(rng: np.random.Generator, times: np.ndarray, speaking: np.ndarray) -> np.ndarray:
    """Nod bursts (1-3 cycles at 1.6-2.4 Hz, 4-8 deg down) every 1-3 s of listening."""
    out = np.zeros_like(times)
    start, last = rng.uniform(0.3, 1.5), times[-1] if len(times) else 0.0
    while start < last:
        freq, cycles, depth = rng.uniform(1.6, 2.4), int(rng.integers(1, 4)), rng.uniform(4, 8)
        end = start + cycles / freq
        inside = (times >= start) & (times < end)
        if inside.any() and not speaking[inside].any():
            out[inside] += depth * 0.5 * (1 - np.cos(2 * np.pi * freq * (times[inside] - start)))
        start = end + rng.uniform(1.0, 3.0)
    return out


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Moving average over ``width`` frames (same length), for soft speaking/listening changes."""
    if width < 2:
        return values
    kernel = np.hanning(width + 2)[1:-1]
    padded = np.pad(values, width, mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="same")[width:-width]
