"""Real-looking scenes with known object counts, duplicates included, cut and pasted from i-CLEVR's own images.

i-CLEVR renders each scene three times, ``X_0``, ``X_1``, ``X_2``, adding one object at a time, so the difference
between two views is exactly the added object and its shadow. That gives, for every complete scene, the cut-outs of
its second and third object (a *sprite*: the pixels and a soft coverage) and where its objects stand. Pasting
sprites of other scenes at a free spot of the same image rows (the camera barely moves between scenes, so a row keeps
an object's scale and lighting) makes images of up to six objects, with a chosen object two or three times: what an
object counter needs to see and the real set never shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from condgen.data.iclevr import LabeledImages
from condgen.data.splits import scene_of

COVERAGE_FROM = 4.0  # a view difference (largest channel, 0..255) below this is rendering noise
COVERAGE_FULL = 28.0  # ... and above this is the object itself; in between lie its shadow and antialiased edges
SOLID = 0.5  # coverage above which a pixel belongs to the object when checking for overlaps
FIRST_OBJECT_DEVIATION = 15.0  # how far the first object's pixels stand from the average floor (gray objects barely)
SPACING = 2  # pixels kept free around every object


@dataclass
class SceneCutouts:
    """What the complete scenes of a dataset give: ``sprites`` (M, 3, S, S) uint8 views that show each cut-out
    object, ``coverage`` (M, S, S) float in [0, 1], ``sprite_classes`` (M,); for every view of those scenes
    (``views``, indices into the dataset), ``occupied`` (V, S, S) bool: where its objects stand."""

    sprites: torch.Tensor
    coverage: torch.Tensor
    sprite_classes: torch.Tensor
    views: torch.Tensor
    occupied: torch.Tensor


def complete_scenes(files: list[str]) -> dict[str, list[int]]:
    """Scenes whose three views ``_0``, ``_1``, ``_2`` are all present: scene -> the views' indices in order."""
    by_scene: dict[str, dict[str, int]] = {}
    for index, name in enumerate(files):
        by_scene.setdefault(scene_of(name), {})[name.rsplit(".", 1)[0][-2:]] = index
    return {
        scene: [views[suffix] for suffix in ("_0", "_1", "_2")]
        for scene, views in by_scene.items()
        if all(suffix in views for suffix in ("_0", "_1", "_2"))
    }


def cut_out(data: LabeledImages, indices: torch.Tensor) -> SceneCutouts:
    """Sprites and occupied areas of the complete scenes among the dataset's ``indices``. A view pair whose labels
    do not differ by exactly one object (a dataset not rendered incrementally) gives no sprite."""
    allowed = set(indices.tolist())
    scenes = [views for views in complete_scenes(data.files).values() if all(v in allowed for v in views)]
    images = data.images.float()
    floor = _average_floor(images[[views[0] for views in scenes]])
    sprites, coverage, classes, views, occupied = [], [], [], [], []
    for first, second, third in scenes:
        first_object = _dilate(_deviation(images[first], floor) > FIRST_OBJECT_DEVIATION, SPACING + 1)
        solid = [first_object]
        for before, after in ((first, second), (second, third)):
            added = data.labels[after] - data.labels[before]
            if not (added.sum() == 1 and added.min() == 0):
                break
            cover = ((images[after] - images[before]).abs().amax(0) - COVERAGE_FROM) / (COVERAGE_FULL - COVERAGE_FROM)
            cover = cover.clamp(0, 1)
            sprites.append(data.images[after])
            coverage.append(cover)
            classes.append(int(added.argmax()))
            solid.append(_dilate(cover > SOLID, SPACING))
        for k, view in enumerate((first, second, third)[: len(solid)]):
            views.append(view)
            occupied.append(torch.stack(solid[: k + 1]).any(0))
    size = data.images.shape[-1]
    return SceneCutouts(
        sprites=torch.stack(sprites) if sprites else torch.zeros(0, 3, size, size, dtype=torch.uint8),
        coverage=torch.stack(coverage) if coverage else torch.zeros(0, size, size),
        sprite_classes=torch.tensor(classes, dtype=torch.long),
        views=torch.tensor(views, dtype=torch.long),
        occupied=torch.stack(occupied) if occupied else torch.zeros(0, size, size, dtype=torch.bool),
    )


def paste_objects(
    image: torch.Tensor,
    occupied: torch.Tensor,
    cutouts: SceneCutouts,
    sprites: list[int],
    generator: torch.Generator,
    max_shift: int | None = None,
    tries: int = 8,
) -> tuple[torch.Tensor, list[int]]:
    """Pastes each of ``sprites`` (indices into ``cutouts``) into the uint8 ``image`` (3, S, S), moved sideways by
    up to ``max_shift`` pixels (half the image by default) and up or down by 2, where it overlaps no object and
    stays whole in the frame; a sprite that finds no such spot in ``tries`` draws is left out. Returns the new uint8
    image and the classes actually pasted."""
    size = image.shape[-1]
    max_shift = size // 2 if max_shift is None else max_shift
    canvas, free_of = image.float(), occupied.clone()
    pasted = []
    for sprite in sprites:
        cover = cutouts.coverage[sprite]
        for _ in range(tries):
            dx = int(torch.randint(-max_shift, max_shift + 1, (), generator=generator))
            dy = int(torch.randint(-2, 3, (), generator=generator))
            moved = _shift(cover, dx, dy)
            solid = moved > SOLID
            if moved.sum() < 0.95 * cover.sum() or (solid & free_of).any():
                continue
            pixels = _shift(cutouts.sprites[sprite].float(), dx, dy)
            canvas = canvas + moved * (pixels - canvas)
            free_of |= _dilate(solid, SPACING)
            pasted.append(int(cutouts.sprite_classes[sprite]))
            break
    return canvas.round().clamp(0, 255).to(torch.uint8), pasted


def _average_floor(first_views: torch.Tensor) -> torch.Tensor:
    """The per-pixel median of one-object views: the floor, as no single object stays at one pixel."""
    return first_views[:4000].median(0).values


def _deviation(image: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """How far each pixel stands from the floor, after matching the image's overall brightness to the floor's."""
    scale = image.median() / floor.median().clamp(min=1.0)
    return (image - floor * scale).abs().amax(0)


def _dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    if pixels <= 0:
        return mask
    grown = F.max_pool2d(mask[None, None].float(), 2 * pixels + 1, stride=1, padding=pixels)
    return grown[0, 0] > 0


def _shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``x`` (..., H, W) moved right by ``dx`` and down by ``dy`` pixels, filling with zeros."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    src_y, dst_y = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    src_x, dst_x = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    out[..., dst_y, dst_x] = x[..., src_y, src_x]
    return out
