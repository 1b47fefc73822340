"""i-CLEVR's object names, and the request the process pictures show. Plain data: no torch, so the command line
can name them in its help without loading a model library."""

from __future__ import annotations

SHAPES = ("cube", "sphere", "cylinder")
COLORS = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
# i-CLEVR's objects.json order: shape-major (cubes 0-7, spheres 8-15, cylinders 16-23).
ICLEVR_OBJECTS: tuple[str, ...] = tuple(f"{color} {shape}" for shape in SHAPES for color in COLORS)

DEFAULT_OBJECTS = "red sphere, cyan cylinder, cyan cube"  # the request of the denoising and interpolation pictures
