"""``condgen data check``: validate a dataset folder and count what it holds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from condgen.data.iclevr import load_dataset, load_label_files


def check_dataset(root: str | Path, progress: bool = True) -> dict:
    """Validates every JSON entry and decodes every image (raising :class:`CondgenError` on the first problem);
    returns counts per class, per number of objects, and per label file."""
    root = Path(root)
    data = load_dataset(root, progress=progress)
    counts = data.labels.sum(dim=0).long().tolist()
    label_files = {name: len(labels) for name, labels in load_label_files(root, data.codec).items()}
    listed = set(data.files)
    unlisted = sum(1 for p in (root / "images").iterdir() if p.is_file() and p.name not in listed)
    return {
        "root": str(root),
        "images": len(data),
        "image_size": list(data.images.shape[1:]),
        "per_class": dict(zip(data.codec.names, counts)),
        "per_object_count": dict(sorted(Counter(data.labels.sum(dim=1).long().tolist()).items())),
        "label_files": label_files,
        "unlisted_images": unlisted,
    }


def format_report(report: dict) -> str:
    lines = [f"{report['root']}: OK, {report['images']} images of {report['image_size'][1]}x{report['image_size'][2]}"]
    lines.append(
        "images per number of objects: " + ", ".join(f"{k}: {v}" for k, v in report["per_object_count"].items())
    )
    lines.append("images per class:")
    width = max(len(name) for name in report["per_class"])
    lines += [f"  {name:<{width}}  {count:6d}" for name, count in report["per_class"].items()]
    for name, count in report["label_files"].items():
        lines.append(f"{name}: {count} label lists")
    if report["unlisted_images"]:
        lines.append(f"note: {report['unlisted_images']} files in images/ are not listed in train.json")
    return "\n".join(lines)
