"""``condgen data check``: validate a dataset folder and count what it holds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from condgen.data.iclevr import converted_images, load_dataset, load_label_files
from condgen.errors import CondgenError


def check_dataset(
    root: str | Path, progress: bool = True, strict: bool = False, max_objects: int | None = None
) -> dict:
    """Validates every JSON entry and decodes every image (raising :class:`CondgenError` on the first problem);
    returns counts per class, per number of objects and per label file, the images loading converts (not
    64x64 RGB) and the label lists that ask for more than ``max_objects`` objects (by
    default the largest scene of train.json, which is what a model trained on it accepts). ``strict`` (what
    training uses) refuses both instead of reporting them."""
    root = Path(root)
    data = load_dataset(root, progress=progress, strict=strict)
    largest = int(data.labels.sum(dim=1).max())
    limit = largest if max_objects is None else max_objects
    counts = data.labels.sum(dim=0).long().tolist()
    label_files = load_label_files(root, data.codec)
    too_long = {}
    for name, labels in label_files.items():
        long_entries = (labels.sum(dim=1) > limit).nonzero().flatten().tolist()
        if long_entries and strict:
            entry = long_entries[0]
            raise CondgenError(
                f"{root / name}: entry {entry} asks for {int(labels[entry].sum())} objects, more than {limit} "
                f"(train.json's largest scene has {largest}; --max-objects to change)"
            )
        if long_entries:
            too_long[name] = long_entries
    listed = set(data.files)
    unlisted = sum(1 for p in (root / "images").iterdir() if p.is_file() and p.name not in listed)
    return {
        "root": str(root),
        "images": len(data),
        "image_size": list(data.images.shape[1:]),
        "per_class": dict(zip(data.codec.names, counts)),
        "per_object_count": dict(sorted(Counter(data.labels.sum(dim=1).long().tolist()).items())),
        "label_files": {name: len(labels) for name, labels in label_files.items()},
        "unlisted_images": unlisted,
        "converted_images": converted_images(root / "images", data.files),
        "max_objects": limit,
        "too_many_objects": too_long,
    }


def format_report(report: dict) -> str:
    size = f"{report['image_size'][1]}x{report['image_size'][2]}"
    lines = [f"{report['root']}: OK, {report['images']} images of {size}"]
    if report["converted_images"]:
        shown = ", ".join(f"{name} ({what})" for name, what in report["converted_images"][:5])
        more = len(report["converted_images"]) - 5
        lines[0] += f" after conversion: {len(report['converted_images'])} images are loaded as {size} RGB from "
        lines[0] += shown + (f" and {more} more" if more > 0 else "") + "; training refuses them (strict)"
    lines.append(
        "images per number of objects: " + ", ".join(f"{k}: {v}" for k, v in report["per_object_count"].items())
    )
    lines.append("images per class:")
    width = max(len(name) for name in report["per_class"])
    lines += [f"  {name:<{width}}  {count:6d}" for name, count in report["per_class"].items()]
    for name, count in report["label_files"].items():
        lines.append(f"{name}: {count} label lists")
        long_entries = report["too_many_objects"].get(name)
        if long_entries:
            lines.append(
                f"note: {name}: {len(long_entries)} label lists ask for more than {report['max_objects']} objects "
                f"(entries {', '.join(map(str, long_entries[:5]))}); a model trained on this set refuses them"
            )
    if report["unlisted_images"]:
        lines.append(f"note: {report['unlisted_images']} files in images/ are not listed in train.json")
    return "\n".join(lines)
