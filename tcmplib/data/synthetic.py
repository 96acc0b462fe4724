"""Synthetic hand actions with FPHA's shape: the data set the book is built on.

FPHA may not be redistributed, so the book needs data that anyone can regenerate and that
behaves like FPHA where it matters to the model: 21 joints in FPHA's order and millimetre
scale, 45 classes, 6 subjects present in both halves of a 600/575 split, sequence lengths
from 7 to over a thousand frames with a median near 80, and sensor noise.

**How a class is built.** A class is one *hand program* (how the five fingers flex over
time) combined with one *wrist script* (how the hand turns over time): 5 x 9 = 45 classes.
The hand programs and the wrist scripts are listed in :data:`HAND_PROGRAMS` and
:data:`WRIST_SCRIPTS`. Every class shares its hand program with 8 others and its wrist script
with 4 others, and several scripts differ only in a detail (the direction of a twist, two
stirring cycles against three, whether a twist is followed by a tilt), so that classes are
distinct but partly confusable.

**What varies within a class.** Each of 6 subjects has a hand size, a speed (hence sequence
lengths), an amplitude style, a resting finger posture and a habitual hand orientation. Each
sequence further draws its own amplitudes, timing (onset shifts and a monotone time warp),
posture, orientation, a slow orientation drift, a wandering wrist trajectory through the
camera's field of view, and tracker noise (white plus slowly drifting, per joint).
The wrist trajectory carries no class information: after wrist centring it is gone, exactly
as for FPHA.

Everything is drawn from one ``numpy.random.Generator`` seeded by ``seed``, so a seed fixes
every array; the class definitions themselves do not depend on the seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from tcmplib.data.skeleton import FINGERS, NUM_JOINTS, WRIST, SkeletonSequences

__all__ = [
    "SyntheticConfig",
    "HAND_PROGRAMS",
    "WRIST_SCRIPTS",
    "synthetic_class_names",
    "describe_classes",
    "generate_synthetic",
    "hand_pose",
]

# ---------------------------------------------------------------------------------------------
# The hand: geometry of a right hand in a hand frame with x towards the little finger, y along
# the fingers, z out of the back of the hand (the palm faces -z); x, y, z is right-handed.
# Lengths are typical adult values in millimetres.

#: Wrist-to-MCP vectors (thumb: its base joint, close to the wrist as in FPHA's TMCP).
_MCP_POSITIONS = np.array(
    [
        [-12.0, 8.0, -6.0],  # thumb
        [-20.0, 72.0, 0.0],  # index
        [-2.0, 72.0, 0.0],  # middle
        [15.0, 66.0, 0.0],  # ring
        [30.0, 55.0, 0.0],  # pinky
    ]
)
#: Lengths of the three segments MCP-PIP, PIP-DIP, DIP-TIP of each finger.
_SEGMENT_LENGTHS = np.array(
    [
        [46.0, 32.0, 25.0],  # thumb: metacarpal, proximal and distal phalanges
        [40.0, 24.0, 19.0],
        [45.0, 27.0, 20.0],
        [42.0, 26.0, 20.0],
        [33.0, 19.0, 18.0],
    ]
)
#: Flexion (degrees) of the three joints of each finger at full curl (curl = 1).
_MAX_FLEXION_DEG = np.array(
    [
        [25.0, 40.0, 55.0],  # thumb
        [85.0, 100.0, 70.0],
        [85.0, 100.0, 70.0],
        [85.0, 100.0, 70.0],
        [85.0, 100.0, 70.0],
    ]
)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _finger_frames() -> tuple[np.ndarray, np.ndarray]:
    """Rest direction of each finger and the direction it curls towards (both unit, orthogonal)."""
    directions = np.array(
        [_unit(np.array([-0.55, 0.7, -0.45]))]
        + [_unit(p * np.array([1.0, 1.0, 0.0])) for p in _MCP_POSITIONS[1:]]
    )
    towards = np.array([[0.7, 0.2, -0.7]] + [[0.0, 0.0, -1.0]] * 4)
    # Gram-Schmidt: the curl plane of each finger is spanned by its direction and this normal.
    normals = np.array([_unit(t - (t @ d) * d) for t, d in zip(towards, directions, strict=True)])
    return directions, normals


_FINGER_DIRECTIONS, _FINGER_NORMALS = _finger_frames()

# Camera frame as in FPHA: x right, y down, z depth. At rest the fingers point up the image and
# a little away from the camera, and the back of the hand faces the camera: an egocentric view
# of a right hand, thumb on the left.
_REST_ORIENTATION = np.stack(
    [
        _unit(np.cross([0.0, -0.85, 0.5], [0.0, -0.5, -0.85])),
        _unit(np.array([0.0, -0.85, 0.5])),
        _unit(np.array([0.0, -0.5, -0.85])),
    ],
    axis=1,
)  # columns: the hand frame's x, y, z axes in camera coordinates
_CAMERA_OFFSET_MM = np.array([0.0, 30.0, 400.0])


def hand_pose(curls: np.ndarray, scale: np.ndarray | float = 1.0) -> np.ndarray:
    """Joint positions in the hand frame for per-finger curls: (T, 5) in [0, 1] -> (T, 21, 3).

    ``scale`` multiplies all lengths (a scalar, or (5, 3) per segment with the MCP vectors
    scaled by its row means). Joints come out in FPHA's order, wrist at the origin.
    """
    curls = np.atleast_2d(curls)
    scale_arr = np.broadcast_to(np.asarray(scale, dtype=np.float64), _SEGMENT_LENGTHS.shape)
    frames = np.zeros((len(curls), NUM_JOINTS, 3))
    for f in range(len(FINGERS)):
        mcp = _MCP_POSITIONS[f] * scale_arr[f].mean()
        angles = np.cumsum(curls[:, f, None] * np.radians(_MAX_FLEXION_DEG[f]), axis=1)  # (T, 3)
        segments = (
            np.cos(angles)[..., None] * _FINGER_DIRECTIONS[f]
            + np.sin(angles)[..., None] * _FINGER_NORMALS[f]
        ) * (_SEGMENT_LENGTHS[f] * scale_arr[f])[None, :, None]
        frames[:, 1 + f] = mcp
        frames[:, 6 + 3 * f : 9 + 3 * f] = mcp + np.cumsum(segments, axis=1)
    frames[:, WRIST] = 0.0
    return frames


# ---------------------------------------------------------------------------------------------
# Motion primitives over normalized time tau in [0, 1].


def _ramp(tau: np.ndarray, start: float, end: float) -> np.ndarray:
    """0 before ``start``, 1 after ``end``, a smooth (cosine) step in between."""
    x = np.clip((tau - start) / (end - start), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def _bump(tau: np.ndarray, start: float, end: float) -> np.ndarray:
    """0 outside [start, end], rising smoothly to 1 in the middle and back."""
    x = np.clip((tau - start) / (end - start), 0.0, 1.0)
    return np.sin(np.pi * x) ** 2


def _oscillation(tau: np.ndarray, start: float, end: float, cycles: int) -> np.ndarray:
    """``cycles`` full sine periods inside [start, end], softened at both ends."""
    x = np.clip((tau - start) / (end - start), 0.0, 1.0)
    return np.sin(2 * np.pi * cycles * x) * np.sin(np.pi * x) ** 0.5


#: A movement over normalized time ``tau`` whose onset is moved by ``shift``.
Movement = Callable[[np.ndarray, float], np.ndarray]
#: A motion primitive over normalized time: ``(tau, start, end)`` -> values in [-1, 1].
Primitive = Callable[[np.ndarray, float, float], np.ndarray]


def _held(curls: list[float]) -> Movement:
    """A hand program that holds one posture (a curl per finger) throughout."""
    return lambda tau, shift: np.broadcast_to(curls, (len(tau), 5)).copy()


def _turn(primitive: Primitive, start: float, end: float, degrees: list[float]) -> Movement:
    """A wrist script: the turn by ``degrees`` (pronation, flexion, deviation), paced by
    ``primitive`` over [start, end] of the sequence (both moved by the shift)."""
    return lambda tau, shift: np.outer(primitive(tau, start + shift, end + shift), degrees)


def _stir(cycles: int) -> Primitive:
    """The oscillation of ``cycles`` full periods, as a primitive."""
    return lambda tau, start, end: _oscillation(tau, start, end, cycles)


def _then(first: Movement, second: Movement) -> Movement:
    """Two wrist movements added (each already timed to its own part of the sequence)."""
    return lambda tau, shift: first(tau, shift) + second(tau, shift)


#: Hand programs: curl of (thumb, index, middle, ring, pinky) over time, 0 = straight, 1 = fist.
#: ``shift`` moves the onset of the movements (per-sequence timing variation).
HAND_PROGRAMS: dict[str, tuple[str, Movement]] = {
    "open": ("flat hand, fingers almost straight", _held([0.15, 0.1, 0.1, 0.12, 0.15])),
    "grip": (
        "power grip around a cylinder: all fingers curled, thumb wrapped",
        _held([0.6, 0.7, 0.75, 0.75, 0.75]),
    ),
    "pinch": (
        "thumb and index meet, the other fingers half curled",
        _held([0.55, 0.55, 0.35, 0.35, 0.35]),
    ),
    "point": (
        "index straight, the other fingers curled, thumb folded over them",
        _held([0.65, 0.05, 0.85, 0.85, 0.85]),
    ),
    "grasp": (
        "open hand closes into a grip, holds, then opens again",
        lambda tau, shift: (
            0.12
            + np.outer(
                _ramp(tau, 0.1 + shift, 0.3 + shift) - _ramp(tau, 0.7 + shift, 0.9 + shift),
                [0.5, 0.6, 0.65, 0.63, 0.6],
            )
        ),
    ),
}

#: Wrist scripts: (pronation about the forearm axis, flexion, deviation) in degrees over time.
WRIST_SCRIPTS: dict[str, tuple[str, Movement]] = {
    "hold": ("no wrist movement", lambda tau, shift: np.zeros((len(tau), 3))),
    "twist_in": (
        "one inward twist of 75 degrees (as when opening a lid)",
        _turn(_ramp, 0.2, 0.8, [75.0, 0.0, 0.0]),
    ),
    "twist_out": (
        "one outward twist of 75 degrees: twist_in mirrored",
        _turn(_ramp, 0.2, 0.8, [-75.0, 0.0, 0.0]),
    ),
    "stir2": (
        "back-and-forth twisting, 2 cycles of 30 degrees",
        _turn(_stir(2), 0.1, 0.9, [30.0, 0.0, 0.0]),
    ),
    "stir3": (
        "back-and-forth twisting, 3 cycles of 30 degrees: stir2 with one more cycle",
        _turn(_stir(3), 0.1, 0.9, [30.0, 0.0, 0.0]),
    ),
    "tilt": (
        "the hand tips forward by 60 degrees and back (as when pouring)",
        _turn(_bump, 0.2, 0.85, [0.0, 60.0, 0.0]),
    ),
    "wave": (
        "side-to-side wrist deviation, 2 cycles of 25 degrees",
        _turn(_stir(2), 0.1, 0.9, [0.0, 0.0, 25.0]),
    ),
    "twist_tilt": (
        "an inward twist, then a tilt: starts like twist_in",
        _then(_turn(_ramp, 0.1, 0.45, [60.0, 0.0, 0.0]), _turn(_bump, 0.5, 0.9, [0.0, 60.0, 0.0])),
    ),
    "tilt_twist": (
        "a tilt, then an outward twist: starts like tilt",
        _then(_turn(_bump, 0.1, 0.5, [0.0, 60.0, 0.0]), _turn(_ramp, 0.55, 0.9, [-60.0, 0.0, 0.0])),
    ),
}

#: Relative duration of each wrist script (longer scripts take more frames).
_SCRIPT_DURATION = {
    "hold": 0.8, "twist_in": 0.9, "twist_out": 0.9, "stir2": 1.15, "stir3": 1.35,
    "tilt": 1.0, "wave": 1.0, "twist_tilt": 1.3, "tilt_twist": 1.3,
}  # fmt: skip


def synthetic_class_names() -> tuple[str, ...]:
    """The 45 class names ``<hand program>-<wrist script>``, hand program major."""
    return tuple(f"{hand}-{wrist}" for hand in HAND_PROGRAMS for wrist in WRIST_SCRIPTS)


def describe_classes() -> list[dict[str, str | int]]:
    """One row per class (label, name, hand program, wrist script, their descriptions)."""
    return [
        {
            "label": label,
            "name": name,
            "hand": name.split("-")[0],
            "wrist": name.split("-")[1],
            "hand_description": HAND_PROGRAMS[name.split("-")[0]][0],
            "wrist_description": WRIST_SCRIPTS[name.split("-")[1]][0],
        }
        for label, name in enumerate(synthetic_class_names())
    ]


# ---------------------------------------------------------------------------------------------
# Generation.


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and variability of the synthetic data; the defaults mimic FPHA.

    The variability settings set the difficulty. They were tuned by training the baseline
    GCN on the result, so that it does well but clearly below 100% on the test split, leaving
    room to see pruning hurt; larger spreads make the task harder.
    """

    n_train: int = 600
    n_test: int = 575
    n_subjects: int = 6
    median_length: float = 75.0
    min_length: int = 7
    max_length: int = 1150
    length_spread: float = 0.5  # sigma of the per-sequence log-length
    subject_speed_spread: float = 0.2  # sigma of the per-subject log-speed
    hand_size_spread: float = 0.07  # relative sd of the subject hand size
    amplitude_spread: float = 0.15  # sigma of the per-sequence log-amplitude of a movement
    timing_shift: float = 0.03  # sd of the onset shift, in fractions of the sequence
    time_warp: float = 0.1  # sigma of the log-exponent of the monotone time warp
    posture_spread: float = 0.05  # sd of the per-sequence curl offset of each finger
    orientation_spread_deg: float = 6.0  # sd of the per-sequence orientation, each axis
    subject_orientation_deg: float = 6.0  # sd of each subject's habitual orientation
    drift_deg: float = 4.0  # sd of the slow orientation drift, each axis
    trajectory_mm: float = 60.0  # sd of the wrist's wandering through the view
    noise_mm: float = 2.0  # sd of the white tracker noise per coordinate
    noise_drift_mm: float = 3.0  # sd of the slowly drifting tracker error per joint

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0 or (name.startswith("n_") and value < 1):
                raise ValueError(
                    f"SyntheticConfig.{name}: expected a non-negative size, got {value!r}"
                )
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(
                f"SyntheticConfig: expected 1 <= min_length <= max_length, got "
                f"{self.min_length} and {self.max_length}"
            )


def _rotations(angles_deg: np.ndarray) -> np.ndarray:
    """(T, 3) angles (about y = forearm axis, about x, about z) -> (T, 3, 3), R = Rz Rx Ry."""
    a, b, c = np.radians(angles_deg).T
    ones, zeros = np.ones_like(a), np.zeros_like(a)
    ry = np.stack(
        [np.cos(a), zeros, np.sin(a), zeros, ones, zeros, -np.sin(a), zeros, np.cos(a)], -1
    )
    rx = np.stack(
        [ones, zeros, zeros, zeros, np.cos(b), -np.sin(b), zeros, np.sin(b), np.cos(b)], -1
    )
    rz = np.stack(
        [np.cos(c), -np.sin(c), zeros, np.sin(c), np.cos(c), zeros, zeros, zeros, ones], -1
    )
    return rz.reshape(-1, 3, 3) @ rx.reshape(-1, 3, 3) @ ry.reshape(-1, 3, 3)


def _smooth_noise(rng: np.random.Generator, tau: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Slow random curves over tau, (T, *shape), unit sd on average.

    Each curve is a sum of the first 3 sine and cosine harmonics of a half period over the
    sequence, with normal coefficients of sd 1/h: one matrix product for all curves.
    """
    harmonics = np.arange(1, 4)
    angle = np.pi * np.outer(tau, harmonics)
    basis = np.concatenate([np.sin(angle), np.cos(angle)], axis=1) / np.sqrt(
        np.sum(1.0 / harmonics**2)
    )
    weights = np.tile(1.0 / harmonics, 2)[:, None] * rng.standard_normal((6, int(np.prod(shape))))
    return (basis @ weights).reshape(len(tau), *shape)


def _even_counts(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """``total`` split into ``parts`` counts that differ by at most one, extras at random."""
    counts = np.full(parts, total // parts)
    counts[rng.permutation(parts)[: total % parts]] += 1
    return counts


@dataclass(frozen=True)
class _Subject:
    scale: np.ndarray  # (5, 3) segment-length factors
    speed: float  # > 1: slower, longer sequences
    amplitude: float
    posture: np.ndarray  # (5,) curl offsets
    orientation_deg: np.ndarray  # (3,)


def _draw_subject(rng: np.random.Generator, config: SyntheticConfig) -> _Subject:
    size = 1.0 + config.hand_size_spread * rng.standard_normal()
    return _Subject(
        scale=size * (1.0 + 0.03 * rng.standard_normal((5, 3))),
        speed=float(np.exp(config.subject_speed_spread * rng.standard_normal())),
        amplitude=float(np.exp(0.15 * rng.standard_normal())),
        posture=0.5 * config.posture_spread * rng.standard_normal(5),
        orientation_deg=config.subject_orientation_deg * rng.standard_normal(3),
    )


def _draw_sequence(
    rng: np.random.Generator, config: SyntheticConfig, subject: _Subject, hand: str, wrist: str
) -> np.ndarray:
    """One sequence (T, 21, 3) in camera millimetres for a subject, hand program and script."""
    typical = config.median_length * subject.speed * _SCRIPT_DURATION[wrist]
    length = int(np.clip(round(typical * np.exp(config.length_spread * rng.standard_normal())),
                         config.min_length, config.max_length))  # fmt: skip
    tau = np.linspace(0.0, 1.0, length)
    warped = tau ** np.exp(config.time_warp * rng.standard_normal())

    curls = HAND_PROGRAMS[hand][1](warped, config.timing_shift * rng.standard_normal())
    curls = curls * np.exp(config.amplitude_spread * rng.standard_normal())
    curls += subject.posture + config.posture_spread * rng.standard_normal(5)
    curls += 0.3 * config.posture_spread * _smooth_noise(rng, tau, (5,))
    local = hand_pose(np.clip(curls, -0.1, 1.1), subject.scale)

    motion = WRIST_SCRIPTS[wrist][1](warped, config.timing_shift * rng.standard_normal())
    motion = motion * subject.amplitude * np.exp(config.amplitude_spread * rng.standard_normal())
    offset = subject.orientation_deg + config.orientation_spread_deg * rng.standard_normal(3)
    drift = config.drift_deg * _smooth_noise(rng, tau, (3,))
    rotation = _REST_ORIENTATION @ _rotations(offset[None, :] + drift) @ _rotations(motion)

    position = _CAMERA_OFFSET_MM + config.trajectory_mm * _smooth_noise(rng, tau, (3,))
    frames = np.einsum("tij,tnj->tni", rotation, local) + position[:, None, :]
    frames += config.noise_drift_mm * _smooth_noise(rng, tau, (NUM_JOINTS, 3))
    frames += config.noise_mm * rng.standard_normal(frames.shape)
    return frames


def generate_synthetic(seed: int = 0, config: SyntheticConfig | None = None) -> SkeletonSequences:
    """Generate the synthetic hand-action set (train block then test block, like FPHA's split).

    Per class, the train and test counts differ by at most one across classes (600 = 45 x 13
    + 15, 575 = 45 x 12 + 35 by default), and each class cycles through all subjects in both
    halves, so every subject appears in train and test as in FPHA's split.
    """
    config = config or SyntheticConfig()
    rng = np.random.default_rng(seed)
    names = synthetic_class_names()
    subjects = [_draw_subject(rng, config) for _ in range(config.n_subjects)]

    sequences: list[np.ndarray] = []
    labels: list[int] = []
    subject_ids: list[int] = []
    is_train: list[bool] = []
    ids: list[str] = []
    for train, total in ((True, config.n_train), (False, config.n_test)):
        for label, count in enumerate(_even_counts(total, len(names), rng)):
            hand, wrist = names[label].split("-")
            first_subject = int(rng.integers(config.n_subjects))
            for k in range(count):
                subject = (first_subject + k) % config.n_subjects
                repetition = 2 * (k // config.n_subjects) + (2 if train else 1)
                sequences.append(_draw_sequence(rng, config, subjects[subject], hand, wrist))
                labels.append(label)
                subject_ids.append(subject + 1)
                is_train.append(train)
                ids.append(f"Subject_{subject + 1}/{names[label]}/{repetition}")

    result = SkeletonSequences(
        name="synthetic",
        sequences=tuple(sequences),
        labels=np.array(labels, dtype=np.int64),
        class_names=names,
        subjects=np.array(subject_ids, dtype=np.int64),
        is_train=np.array(is_train, dtype=bool),
        ids=tuple(ids),
        meta={"seed": seed, "config": asdict(config)},
    )
    result.meta.update(result.counts())
    return result
