"""A CLEVR-like scene renderer that writes datasets in the i-CLEVR format, with no download.

Scenes are objects (cube, sphere, cylinder x 8 CLEVR colours, rubber or metal) on a gray floor, seen by a camera above
the floor: perspective makes farther objects smaller and higher in the image, a key light gives Lambertian shading,
specular highlights and soft shadows. No object may be hidden by nearer ones beyond a limit. Everything is drawn with
numpy on the whole pixel grid, with analytically antialiased edges, so a 64x64 image costs about a millisecond.

Two modes:

- i-CLEVR triples (the default): scenes of 3 distinct objects, each written three times, ``scene_NNNNNN_0/1/2.png``,
  with one, two and three of its objects.
- counting (``max_objects`` other than 3, or ``repeats`` above 0): every image is its own scene,
  ``scene_NNNNNN.png``, of 1 to ``max_objects`` (at most 6) objects, and in a share ``repeats`` of the scenes some
  object (same colour and shape) appears two or more times. ``counts.json`` records how many instances of each
  object a scene holds, which multi-hot labels cannot, so an object counter can be checked on duplicates and on
  crowded scenes.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from condgen.data.jsonio import write_json
from condgen.data.vocabulary import ICLEVR_OBJECTS
from condgen.errors import CondgenError
from condgen.progress import progress_bar

# CLEVR's own colour values (its properties.json), in the order of labels.COLORS.
RGB = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
MAX_OBJECTS = 3  # objects in an i-CLEVR scene, and the default --max-objects
COUNTING_MAX_OBJECTS = 6  # the most objects a counting scene may hold
PLACEMENT_TRIES = 20  # floor points tried for one object of a counting scene before its placement starts again
NEAR, FAR = 4.5, 8.5  # the depth range of ground contact points, in floor units from the camera
CHUNK = 64  # scenes per rendering job
MIN_VISIBLE = 0.6  # every object keeps at least this share of its pixels in front of nearer objects
TILT = 0.45  # how much of a horizontal disc the camera sees: a circle on the floor projects to an R x TILT*R ellipse
LIGHT = np.array([-0.55, -0.65, 0.52], dtype=np.float32)  # from the upper left, towards the camera; y points down
LIGHT /= np.linalg.norm(LIGHT)
HALFWAY = LIGHT + np.array([0.0, 0.0, 1.0], dtype=np.float32)
HALFWAY /= np.linalg.norm(HALFWAY)
TOP_NORMAL = np.array([0.0, -0.9, 0.44], dtype=np.float32)  # an upward-facing surface, as the tilted camera sees it


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    metal: bool
    u: float  # ground contact point, in pixels
    v: float
    radius: float  # on-screen half width, in pixels
    angle: float  # cube rotation about the vertical axis
    shade: float  # small brightness variation of the colour

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


def sample_scene(rng: np.random.Generator, size: int) -> list[SceneObject]:
    """Three distinct objects placed on the floor; depth ``z`` sets both the height in the image and the scale."""
    names = rng.choice(len(ICLEVR_OBJECTS), size=MAX_OBJECTS, replace=False)
    objects = []
    for index in names:
        color, shape = ICLEVR_OBJECTS[index].split(" ")
        z = rng.uniform(NEAR, FAR)  # distance from the camera, in floor units
        world_radius = rng.uniform(0.38, 0.6)
        metal = bool(rng.random() < 0.35)
        u, v, radius = _on_floor(size, rng.uniform(0.16, 0.84), z, world_radius)
        angle, shade = rng.uniform(0, math.pi / 2), rng.uniform(0.92, 1.08)
        objects.append(SceneObject(shape, color, metal, u, v, radius, angle, shade))
    return objects


def _on_floor(size: int, across: float, z: float, world_radius: float) -> tuple[float, float, float]:
    """Image position (u, v) and on-screen radius of an object standing at ``across`` of the width, at depth ``z``."""
    return size * across, size * (5.0 / z - 0.18), size * world_radius / z  # depth z projects to v = a + b / z


@dataclass(frozen=True)
class Instance:
    """One object of a counting scene apart from where it stands, so placement retries move it without changing it."""

    shape: str
    color: str
    metal: bool
    world_radius: float
    angle: float
    shade: float

    @classmethod
    def sample(cls, rng: np.random.Generator, name: str) -> Instance:
        color, shape = name.split(" ")
        metal = bool(rng.random() < 0.35)
        return cls(shape, color, metal, rng.uniform(0.38, 0.6), rng.uniform(0, math.pi / 2), rng.uniform(0.92, 1.08))

    def placed(self, rng: np.random.Generator, size: int) -> SceneObject:
        """The instance at a random floor point."""
        z = rng.uniform(NEAR, FAR)
        u, v, radius = _on_floor(size, rng.uniform(0.16, 0.84), z, self.world_radius)
        return SceneObject(self.shape, self.color, self.metal, u, v, radius, self.angle, self.shade)


def draw_instance_names(rng: np.random.Generator, max_objects: int, repeats: float) -> list[str]:
    """The object names of one counting scene, one per instance, distinct names first.

    With probability ``repeats`` the scene holds 2 to ``max_objects`` instances of fewer distinct names, so some
    name comes two or more times; otherwise 1 to ``max_objects`` instances, all distinct (both counts uniform).
    """
    repeat = bool(rng.random() < repeats)
    n = int(rng.integers(2 if repeat else 1, max_objects + 1))
    distinct = int(rng.integers(1, n)) if repeat else n
    picks = rng.choice(len(ICLEVR_OBJECTS), size=distinct, replace=False)
    extra = rng.choice(distinct, size=n - distinct)  # the instances beyond one per name, on random names
    return [ICLEVR_OBJECTS[p] for p in picks] + [ICLEVR_OBJECTS[picks[e]] for e in extra]


class Canvas:
    """The pixel grid of one image size, shared by every layer drawn at that size."""

    def __init__(self, size: int):
        self.size = size
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        self.x, self.y = xs, ys

    def floor(self, brightness: float) -> np.ndarray:
        """A matte gray floor, lit more strongly towards the light and fading towards the far edge."""
        s = self.size
        falloff = np.exp(-(((self.x - 0.45 * s) / (0.9 * s)) ** 2 + ((self.y - 0.8 * s) / (0.8 * s)) ** 2))
        gray = brightness * (0.3 + 0.28 * falloff)
        return np.repeat(gray[None], 3, axis=0)

    def shadow(self, obj: SceneObject) -> np.ndarray:
        """Multiplicative darkening of a soft shadow cast down and to the right of the contact point."""
        r = obj.radius * (1.25 if obj.shape != "sphere" else 1.05)
        du = (self.x - obj.u - 0.9 * obj.radius) / (1.5 * r)
        dv = (self.y - obj.v - 0.1 * obj.radius) / (0.75 * r)
        inside = np.clip(1.3 - np.sqrt(du * du + dv * dv), 0.0, 1.0)
        return 1.0 - 0.45 * inside * inside * (3 - 2 * inside)  # smoothstep: a penumbra, not a hard edge

    def draw(self, obj: SceneObject) -> tuple[np.ndarray, np.ndarray]:
        """The object's colour layer (3, S, S) in [0, 1] and its coverage (S, S) in [0, 1]."""
        albedo = np.array(RGB[obj.color], dtype=np.float32) / 255.0 * obj.shade
        if obj.shape == "sphere":
            normal, coverage = self._sphere(obj)
            diffuse = np.clip(np.tensordot(LIGHT, normal, axes=1), 0, 1)
            specular = np.clip(np.tensordot(HALFWAY, normal, axes=1), 0, 1)
        else:
            faces = self._cube_faces(obj) if obj.shape == "cube" else self._cylinder_faces(obj)
            coverage = np.zeros_like(self.x)
            diffuse = np.zeros_like(self.x)
            specular = np.zeros_like(self.x)
            for face_coverage, face_normal in faces:  # nearer faces last: they win on shared edges
                d = np.clip(np.tensordot(LIGHT, face_normal, axes=1), 0, 1)
                h = np.clip(np.tensordot(HALFWAY, face_normal, axes=1), 0, 1)
                diffuse = diffuse + face_coverage * (d - diffuse)
                specular = specular + face_coverage * (h - specular)
                coverage = np.maximum(coverage, face_coverage)
        if obj.metal:  # darker base, sharp bright highlight
            light = 0.25 + 0.45 * diffuse
            highlight = 0.9 * specular**40
        else:  # rubber: matte, broad faint highlight
            light = 0.32 + 0.68 * diffuse
            highlight = 0.12 * specular**8
        color = albedo[:, None, None] * light[None] + highlight[None]
        return np.clip(color, 0, 1), coverage

    def _sphere(self, obj: SceneObject) -> tuple[np.ndarray, np.ndarray]:
        r, cy = obj.radius, obj.v - obj.radius * 0.95
        nx, ny = (self.x - obj.u) / r, (self.y - cy) / r
        d2 = nx * nx + ny * ny
        coverage = np.clip(r * (1 - np.sqrt(d2)) + 0.5, 0, 1)
        nz = np.sqrt(np.clip(1 - d2, 0, 1))
        return np.stack([nx * (d2 < 1), ny * (d2 < 1), nz]), coverage

    def _ellipse(self, cu: float, cv: float, rx: float, ry: float) -> np.ndarray:
        e = np.sqrt(((self.x - cu) / rx) ** 2 + ((self.y - cv) / ry) ** 2)
        return np.clip((1 - e) * ry + 0.5, 0, 1)

    def _cylinder_faces(self, obj: SceneObject) -> list[tuple[np.ndarray, np.ndarray]]:
        r = obj.radius
        height = 1.7 * r
        ry = TILT * r
        bottom, top = obj.v - ry, obj.v - ry - height
        rect = np.minimum(np.minimum(r - np.abs(self.x - obj.u), self.y - top), bottom - self.y)
        side = np.maximum(np.clip(rect + 0.5, 0, 1), self._ellipse(obj.u, bottom, r, ry))
        nx = np.clip((self.x - obj.u) / r, -1, 1)
        side_normal = np.stack([nx, np.zeros_like(nx), np.sqrt(1 - nx * nx)])
        cap = self._ellipse(obj.u, top, r, ry)
        return [(side, side_normal), (cap, np.broadcast_to(TOP_NORMAL[:, None, None], side_normal.shape))]

    def _cube_faces(self, obj: SceneObject) -> list[tuple[np.ndarray, np.ndarray]]:
        half = obj.radius * 0.78  # a cube's diagonal is wider than its side
        height = 2 * half * 0.92
        c, s = math.cos(obj.angle), math.sin(obj.angle)
        # Floor-plane corners (x right, z away from the camera), projected with the camera tilt.
        corners = [(c * px - s * pz, s * px + c * pz) for px, pz in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        cv = obj.v - TILT * half
        base = [(obj.u + half * x, cv - TILT * half * z) for x, z in corners]
        top = [(u, v - height) for u, v in base]
        faces = []
        for i in range(4):  # side faces whose outward normal points towards the camera (negative z)
            j = (i + 1) % 4
            nx, nz = corners[i][0] + corners[j][0], corners[i][1] + corners[j][1]
            if nz < 0:
                length = math.hypot(nx, nz)
                normal = np.array([nx / length, 0.0, -nz / length], dtype=np.float32)
                faces.append((self._polygon([base[i], base[j], top[j], top[i]]), normal))
        faces.append((self._polygon(top), TOP_NORMAL))
        return [(coverage, np.broadcast_to(n[:, None, None], (3, self.size, self.size))) for coverage, n in faces]

    def _polygon(self, points: list[tuple[float, float]]) -> np.ndarray:
        """Coverage of a convex polygon: the smallest signed distance to its edges (positive inside) + half a pixel."""
        edges = list(zip(points, points[1:] + points[:1]))
        orientation = 1.0 if sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in edges) > 0 else -1.0
        inside = None
        for (x0, y0), (x1, y1) in edges:
            length = math.hypot(x1 - x0, y1 - y0) or 1.0
            d = orientation * ((x1 - x0) * (self.y - y0) - (y1 - y0) * (self.x - x0)) / length
            inside = d if inside is None else np.minimum(inside, d)
        return np.clip(inside + 0.5, 0, 1)


def render_scene(canvas: Canvas, objects: list[SceneObject], floor_brightness: float) -> list[np.ndarray] | None:
    """Renders the scene's incremental views: with objects[:1], objects[:2], ... as uint8 (S, S, 3) images.

    Returns ``None`` in place of the list when an object would be hidden beyond ``MIN_VISIBLE``.
    """
    layers = [canvas.draw(obj) for obj in objects]
    if too_hidden(objects, [coverage for _, coverage in layers]):  # in the full scene bounds it in every smaller view
        return None
    shadows = [canvas.shadow(obj) for obj in objects]
    floor = canvas.floor(floor_brightness)
    return [composite(floor, objects[:count], layers[:count], shadows[:count]) for count in range(1, len(objects) + 1)]


def too_hidden(objects: list[SceneObject], coverages: list[np.ndarray]) -> bool:
    """Whether some object keeps less than ``MIN_VISIBLE`` of its coverage in front of the nearer objects."""
    far_to_near = sorted(range(len(objects)), key=lambda i: objects[i].v)
    for rank, i in enumerate(far_to_near):
        nearer = far_to_near[rank + 1 :]
        visible = coverages[i] * np.prod([1 - coverages[j] for j in nearer], axis=0) if nearer else coverages[i]
        if visible.sum() < MIN_VISIBLE * coverages[i].sum():
            return True
    return False


def composite(
    floor: np.ndarray,
    objects: list[SceneObject],
    layers: list[tuple[np.ndarray, np.ndarray]],
    shadows: list[np.ndarray],
) -> np.ndarray:
    """The floor darkened by every shadow, with the objects drawn over it far to near, as a uint8 (S, S, 3) image."""
    image = floor * np.prod(shadows, axis=0)[None]
    for i in sorted(range(len(objects)), key=lambda i: objects[i].v):
        color, coverage = layers[i]
        image = image + coverage[None] * (color - image)
    return (np.clip(image, 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)


def render_views(seed: int, scene: int, size: int) -> tuple[list[SceneObject], list[np.ndarray]]:
    """Scene ``scene`` of dataset ``seed``: its objects and views. Depends only on (seed, scene, size)."""
    rng = np.random.default_rng([seed, 0, scene])
    canvas = _canvas(size)
    brightness = rng.uniform(0.9, 1.1)
    while True:
        objects = sample_scene(rng, size)
        views = render_scene(canvas, objects, brightness)
        if views is not None:
            return objects, views


def place_instances(
    rng: np.random.Generator, canvas: Canvas, instances: list[Instance]
) -> tuple[list[SceneObject], list[tuple[np.ndarray, np.ndarray]]]:
    """Places the instances one at a time, each where it and every object placed before stay visible.

    Only positions are drawn again, never the instances, so crowded scenes keep their counts: an instance that
    finds no free floor point in ``PLACEMENT_TRIES`` tries starts the placement of the whole scene again. Returns
    the placed objects and their layers (colour, coverage).
    """
    while True:
        objects: list[SceneObject] = []
        layers: list[tuple[np.ndarray, np.ndarray]] = []
        for instance in instances:
            if not _place_one(rng, canvas, instance, objects, layers):
                break
        else:
            return objects, layers


def _place_one(
    rng: np.random.Generator,
    canvas: Canvas,
    instance: Instance,
    objects: list[SceneObject],
    layers: list[tuple[np.ndarray, np.ndarray]],
) -> bool:
    """Appends the instance, at the first of ``PLACEMENT_TRIES`` random floor points that hides no object too much."""
    coverages = [coverage for _, coverage in layers]
    for _ in range(PLACEMENT_TRIES):
        obj = instance.placed(rng, canvas.size)
        layer = canvas.draw(obj)
        if not too_hidden([*objects, obj], [*coverages, layer[1]]):
            objects.append(obj)
            layers.append(layer)
            return True
    return False


def render_counting_scene(
    seed: int, scene: int, size: int, max_objects: int, repeats: float
) -> tuple[list[SceneObject], np.ndarray]:
    """Counting scene ``scene`` of dataset ``seed``: its objects and its image. Depends only on the arguments."""
    rng = np.random.default_rng([seed, 2, scene])  # a stream of its own: [seed, 0, ...] draws the triples
    canvas = _canvas(size)
    brightness = rng.uniform(0.9, 1.1)
    instances = [Instance.sample(rng, name) for name in draw_instance_names(rng, max_objects, repeats)]
    objects, layers = place_instances(rng, canvas, instances)
    shadows = [canvas.shadow(obj) for obj in objects]
    return objects, composite(canvas.floor(brightness), objects, layers, shadows)


_CANVASES: dict[int, Canvas] = {}


def _canvas(size: int) -> Canvas:
    if size not in _CANVASES:
        _CANVASES[size] = Canvas(size)
    return _CANVASES[size]


def _write_scenes(job: tuple[Path, int, list[tuple[int, int]], int]) -> dict[str, list[str]]:
    folder, seed, scenes, size = job
    entries = {}
    for scene, count in scenes:
        objects, views = render_views(seed, scene, size)
        for k in range(count):
            name = f"scene_{scene:06d}_{k}.png"
            Image.fromarray(views[k]).save(folder / name, compress_level=1)
            entries[name] = [obj.name for obj in objects[: k + 1]]
    return entries


def _write_counting_scenes(job: tuple[Path, int, list[int], int, int, float]) -> dict[str, list[str]]:
    """Renders and saves counting scenes; returns file name -> the name of every instance, repeats included."""
    folder, seed, scenes, size, max_objects, repeats = job
    entries = {}
    for scene in scenes:
        objects, image = render_counting_scene(seed, scene, size, max_objects, repeats)
        name = f"scene_{scene:06d}.png"
        Image.fromarray(image).save(folder / name, compress_level=1)
        entries[name] = [obj.name for obj in objects]
    return entries


def _triple_jobs(folder: Path, seed: int, n: int, size: int) -> tuple[Callable, list[tuple]]:
    """The writer and jobs of ``n`` images in triples, the last scene cut short where ``n`` is not a multiple of 3."""
    scenes = [(s, min(MAX_OBJECTS, n - s * MAX_OBJECTS)) for s in range(math.ceil(n / MAX_OBJECTS))]
    return _write_scenes, [(folder, seed, scenes[i : i + CHUNK], size) for i in range(0, len(scenes), CHUNK)]


def _counting_jobs(
    folder: Path, seed: int, n: int, size: int, max_objects: int, repeats: float
) -> tuple[Callable, list[tuple]]:
    """The writer and jobs of ``n`` counting scenes."""
    chunks = [list(range(i, min(i + CHUNK, n))) for i in range(0, n, CHUNK)]
    return _write_counting_scenes, [(folder, seed, scenes, size, max_objects, repeats) for scenes in chunks]


def _render_jobs(
    write: Callable[[tuple], dict[str, list[str]]], jobs: list[tuple], n: int, workers: int, progress: bool
) -> dict[str, list[str]]:
    """Runs the jobs, in worker processes unless there is one of either; returns their entries in job order."""
    entries: dict[str, list[str]] = {}
    with progress_bar(total=n, desc="rendering", unit="img", enabled=progress) as bar:
        if workers == 1 or len(jobs) == 1:
            for part in map(write, jobs):
                entries.update(part)
                bar.update(len(part))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for part in pool.map(write, jobs):
                    entries.update(part)
                    bar.update(len(part))
    return entries


def check_counting_options(max_objects: int, repeats: float) -> None:
    """Refuses a ``--max-objects`` or ``--repeats`` that no counting scene can have, in one line naming the option."""
    if not 1 <= max_objects <= COUNTING_MAX_OBJECTS:
        raise CondgenError(f"--max-objects must be a whole number from 1 to {COUNTING_MAX_OBJECTS}, got {max_objects}")
    if not 0 <= repeats <= 1:  # also refuses nan
        raise CondgenError(f"--repeats must be a share from 0 to 1, got {repeats}")
    if repeats > 0 and max_objects < 2:
        raise CondgenError(f"--repeats {repeats} needs --max-objects 2 or more: a repeated object makes two")


def random_label_lists(rng: np.random.Generator, count: int) -> list[list[str]]:
    """Test-style condition lists: 1-3 distinct objects each, a third of each count."""
    lists = []
    for i in range(count):
        picks = rng.choice(len(ICLEVR_OBJECTS), size=1 + i % MAX_OBJECTS, replace=False)
        lists.append([ICLEVR_OBJECTS[p] for p in picks])
    return lists


def synthesize_dataset(
    out: str | Path,
    n: int,
    seed: int = 0,
    size: int = 64,
    workers: int | None = None,
    progress: bool = True,
    max_objects: int = MAX_OBJECTS,
    repeats: float = 0.0,
) -> dict:
    """Writes ``n`` training images, ``train.json``, ``objects.json``, ``test.json`` and ``new_test.json`` to ``out``.

    With the defaults the images are i-CLEVR triples (``scene_NNNNNN_0/1/2.png``). A ``max_objects`` other than 3
    (1 to 6), or ``repeats`` above 0, makes counting scenes instead: one image per scene (``scene_NNNNNN.png``) of 1
    to ``max_objects`` objects, a share ``repeats`` of them with some object two or more times. Their
    ``train.json`` keeps the distinct object names (multi-hot labels), and ``counts.json`` maps each file name to
    ``{object name: number of instances}``, e.g. ``{"red cube": 2, "blue sphere": 1}``: the same names as its
    ``train.json`` entry, with counts that sum to the number of objects in the image. (Triples write no
    ``counts.json``: each of their objects appears once.)

    The folder is built beside ``out`` and renamed into place at the end, so ``out`` is either complete or absent.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CondgenError(f"{out}: already exists and is not empty; choose a new --out")
    if size < 16:
        raise CondgenError(f"--size must be at least 16 pixels, got {size}")
    check_counting_options(max_objects, repeats)
    counting = max_objects != MAX_OBJECTS or repeats > 0
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        folder = staging / "images"
        folder.mkdir()
        start = time.perf_counter()
        write, jobs = (
            _counting_jobs(folder, seed, n, size, max_objects, repeats)
            if counting
            else _triple_jobs(folder, seed, n, size)
        )
        instances = _render_jobs(write, jobs, n, workers or os.cpu_count() or 1, progress)
        elapsed = time.perf_counter() - start
        label_rng = np.random.default_rng([seed, 1])
        write_json(staging / "objects.json", {name: i for i, name in enumerate(ICLEVR_OBJECTS)})
        write_json(staging / "train.json", {file: list(dict.fromkeys(names)) for file, names in instances.items()})
        if counting:
            write_json(staging / "counts.json", {file: dict(Counter(names)) for file, names in instances.items()})
        write_json(staging / "test.json", random_label_lists(label_rng, 32))
        write_json(staging / "new_test.json", random_label_lists(label_rng, 32))
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"images": n, "seconds": elapsed, "images_per_second": n / elapsed}
