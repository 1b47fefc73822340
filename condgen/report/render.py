"""The report's pages and figures: report.md (tables readable as plain Markdown, figures beside it), report.html
(the same, every image inlined, one self-contained file), and the matplotlib plots: accuracy against network
evaluations and against seconds per image (the Pareto front marked, real images' accuracy as a line where the
report holds it) and accuracy against training minutes."""

from __future__ import annotations

import base64
import html
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from condgen.data.jsonio import write_json  # noqa: E402
from condgen.evaluate.metrics import COUNT_KEYS  # noqa: E402
from condgen.report.measure import SPEED_REQUEST, Model  # noqa: E402
from condgen.viz.grid import save_grid  # noqa: E402

REAL_IMAGES = "real images (held out)"  # the ceiling's row: the shipped judges on held-out real i-CLEVR scenes
RATED = ("accuracy", "exact_set")  # the rates over seeds the quality table shows, and with a counter exact_scene
RATED_NAMES = {"accuracy": "accuracy", "exact_set": "exact set", "exact_scene": "exact scene"}


def model_pictures(model: Model, out: Path) -> Path:
    """A diffusion model's denoising picture (its own sampler, 10 snapshots) or a GAN's interpolation strip, for
    ``SPEED_REQUEST``; returns the PNG."""
    path = out / "images" / f"{model.name}-{'interpolation' if model.is_gan else 'denoising'}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if model.is_gan:
        save_grid(model.pipeline.interpolate(SPEED_REQUEST, seed=0, frames=10), path, nrow=10)
        return path
    states = []
    model.pipeline.generate(SPEED_REQUEST, seed=0, callback=lambda info: states.append(info["x"][:1].cpu()))
    picks = [round(i * (len(states) - 1) / 9) for i in range(10)]
    save_grid(model.pipeline.decode(torch.cat([states[i] for i in picks])), path, nrow=10)
    return path


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y), by increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def label(result: dict) -> str:
    return f"{result['model']} / {result['sampler']}"


def mean_accuracy(result: dict, files: list[str]) -> float:
    return sum(result[name]["accuracy"]["mean"] for name in files) / len(files)


def trade_off_plot(
    results: list[dict], files: list[str], x_key: str, x_label: str, path: Path, ceiling: float | None = None
) -> None:
    """Mean accuracy over ``files`` against ``x_key`` for every result, the Pareto front marked, and the accuracy
    of real images (``ceiling``) as a horizontal line where it is known."""
    points = [(float(r[x_key]), mean_accuracy(r, files)) for r in results]
    front = pareto(points)
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for result, (x, y) in zip(results, points):
        axis.scatter(x, y, s=30)
        axis.annotate(label(result), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    xs, ys = [points[i][0] for i in front], [points[i][1] for i in front]
    axis.plot(xs, ys, "k--o", lw=1, ms=11, mfc="none", label="Pareto front")
    if ceiling is not None:
        axis.axhline(ceiling, color="tab:green", lw=1, ls=":", label=f"real images ({ceiling:.3f})")
    axis.set_xscale("log")
    axis.set_xlabel(x_label)
    axis.set_ylabel(f"top-k accuracy (mean of {', '.join(files)})")
    axis.legend(loc="best", fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def training_plot(training: dict[str, dict | None], path: Path) -> bool:
    curves = {name: record["curve"] for name, record in training.items() if record and record["curve"]}
    if not curves:
        return False
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for name, curve in curves.items():
        axis.plot([m for m, _ in curve], [a for _, a in curve], marker=".", label=name)
    axis.set_xlabel("training minutes (wall clock)")
    axis.set_ylabel("periodic top-k accuracy (train.json label sets)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def figure_cell(figures: dict | None) -> str:
    """A figure over seeds as mean ± half the spread; "-" where the result holds none (no object counter)."""
    return "-" if figures is None else f"{figures['mean']:.3f} ± {figures['spread'] / 2:.3f}"


def counted(results: list[dict], files: list[str]) -> bool:
    """Whether any result holds the object counter's figures (an evaluator of i-CLEVR's objects has a counter)."""
    return any(COUNT_KEYS[0] in r[f] for r in results for f in files)


def ceiling_row(ceiling: dict, keys: tuple[str, ...], files: list[str], lead: list) -> list:
    """The real-image ceiling as a row of a table whose columns are ``keys`` for each of ``files`` after ``lead``."""
    return [*lead, *(f"{ceiling[k]:.3f}" if k in ceiling else "-" for k in keys for _ in files)]


def tables(header: dict, results: list[dict], training: dict[str, dict | None]) -> list[tuple[str, list, list]]:
    """(title, column names, rows) of every table; the quality tables end with the real-image ceiling where the
    header holds it (``real_image_ceiling``: the shipped evaluator's and counter's figures on real images)."""
    files = list(header["files"])
    rated = (*RATED, "exact_scene") if counted(results, files) else RATED
    seeds = [[label(r), f] + [", ".join(f"{v:.3f}" for v in r[f][k]["by_seed"]) if k in r[f] else "-" for k in rated]
             for r in results for f in files]  # fmt: skip
    cost = [
        [
            label(r),
            f"{r['parameters'] / 1e6:.2f} M",
            r["seconds_per_image_batch_1"],
            f"{r['images_per_second_best']} (batch {r['best_batch']})",
            r["peak_memory_mb"],
            r.get("frechet_distance", "-"),
            r["diversity"],
        ]
        for r in results
    ]
    train = [
        [name, rec["steps"], rec["train_minutes"], rec["train_images_per_second"]] if rec else [name, "-", "-", "-"]
        for name, rec in training.items()
    ]
    return quality_tables(results, files, rated, header.get("real_image_ceiling")) + [
        ("Each seed's figures", ["model / sampler", "file"] + [f"{RATED_NAMES[k]} by seed" for k in rated], seeds),
        (
            "Cost, Fréchet distance and diversity",
            [
                "model / sampler",
                "parameters",
                "s/image (batch 1)",
                "images/s (best batch)",
                "peak memory MB",
                "evaluator-feature Fréchet distance",
                "diversity",
            ],
            cost,
        ),  # fmt: skip
        ("Training (the run's own records)", ["model", "steps", "minutes", "train images/s"], train),
    ]


def quality_tables(
    results: list[dict], files: list[str], rated: tuple[str, ...], ceiling: dict | None
) -> list[tuple[str, list, list]]:
    """The rates ``rated`` over seeds, per-object precision / recall and, with a counter, the counted objects; each
    with the real-image ``ceiling`` as its last row where it is known."""
    quality = [[label(r), r["network_evaluations"]] + [figure_cell(r[f].get(k)) for k in rated for f in files]
               for r in results]  # fmt: skip
    objects = [
        [label(r)] + [f"{r[f]['precision']['mean']:.3f} / {r[f]['recall']['mean']:.3f}" for f in files] for r in results
    ]
    if ceiling:
        quality.append(ceiling_row(ceiling, rated, files, [REAL_IMAGES, "-"]))
        if {"precision", "recall"} <= ceiling.keys():
            objects.append([REAL_IMAGES] + [f"{ceiling['precision']:.3f} / {ceiling['recall']:.3f}"] * len(files))
    rates = ", exact-set rate and exact-scene rate" if "exact_scene" in rated else " and exact-set rate"
    title = f"Quality: top-k accuracy{rates}"
    found = [
        (
            f"{title} (mean ± half the spread over seeds)",
            ["model / sampler", "network evaluations"] + [f"{RATED_NAMES[k]} {f}" for k in rated for f in files],
            quality,
        ),
        ("Per-object precision / recall (detected above 0.5)", ["model / sampler", *files], objects),
    ]
    return [*found, count_table(results, files, ceiling)] if "exact_scene" in rated else found


def count_table(results: list[dict], files: list[str], ceiling: dict | None) -> tuple[str, list, list]:
    """The object counter's table: count-exact rate / share with extra objects per file (means over seeds)."""

    def cell(figures: dict) -> str:
        if "count_exact" not in figures:
            return "-"
        return f"{figures['count_exact']['mean']:.3f} / {figures['extra_objects']['mean']:.3f}"

    rows = [[label(r)] + [cell(r[f]) for f in files] for r in results]
    if ceiling and "count_exact" in ceiling:
        rows.append([REAL_IMAGES] + [f"{ceiling['count_exact']:.3f} / {ceiling['extra_objects']:.3f}"] * len(files))
    title = "Objects counted: count-exact rate / share with extra objects (mean over seeds)"
    return title, ["model / sampler", *files], rows


def markdown_table(columns: list, rows: list) -> str:
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


NOTES = (
    "Top-k accuracy is the course's metric (of an image's k requested objects, the share among the evaluator's k "
    "likeliest); the exact-set rate is the share of images in which the evaluator detects (probability above 0.5) "
    "exactly the requested objects. Both compare sets, so a requested object drawn twice passes them; the object "
    "counter, a separate judge, counts the objects an image holds: the count-exact rate is the share of images "
    "holding as many objects as requested, the exact-scene rate the share whose detected objects are exactly the "
    "requested ones and that hold as many objects as requested (every requested object once, nothing else), and "
    "extra objects the share holding more objects than requested. The real-images row, where shown, is the shipped "
    "evaluator's and counter's figures on held-out real i-CLEVR scenes: the most a generated image can score. The "
    "Fréchet distance is computed in the evaluator's 512-d feature space against "
    "real images: it is not Inception FID and compares only models scored alike. Diversity is the mean pairwise "
    f'feature distance of one request ("{SPEED_REQUEST}") over 8 seeds: a collapsed generator scores near 0.'
)


def write_report(
    out: Path, header: dict, models: list[Model], results: list[dict], training: dict, gradnorm: Path | None
) -> Path:
    """Writes report.md, report.html and the figures under ``out``; returns report.md."""
    out.mkdir(parents=True, exist_ok=True)
    files = list(header["files"])
    test_files = [f for f in files if f in ("test", "new_test")] or files
    figures = []
    real_accuracy = (header.get("real_image_ceiling") or {}).get("accuracy")
    nfe = "network evaluations per image"
    trade_off_plot(results, test_files, "network_evaluations", nfe, out / "nfe.png", real_accuracy)
    figures.append(("Accuracy against network evaluations", "nfe.png"))
    seconds = "seconds per image (batch 1)"
    trade_off_plot(results, test_files, "seconds_per_image_batch_1", seconds, out / "time.png", real_accuracy)
    figures.append(("Accuracy against seconds per image", "time.png"))
    if training_plot(training, out / "training.png"):
        figures.append(("Accuracy against training minutes", "training.png"))
    if gradnorm is not None:
        shutil.copy(Path(gradnorm) / "gradnorm.png", out / "gradnorm.png")
        figures.append(("Critic gradient norms per layer (condgen gradnorm)", "gradnorm.png"))
    pictures = []
    for result in results:
        for name in files:
            grid = f"images/{result['model']}-{result['sampler']}-{name}.png"
            pictures.append((f"{label(result)}: {name}.json, seed 0", grid))
    for model in models:
        path = model_pictures(model, out)
        what = "interpolation between two noise vectors" if model.is_gan else "denoising, pure noise to image"
        pictures.append((f"{model.name}: {what}", str(path.relative_to(out))))

    intro = [
        "# condgen report",
        "",
        f"{header['date']}, {header['machine']}; judged by the {header['evaluator']}"
        + (f" and the {header['counter']}" if header.get("counter") else "")
        + f"; {header['seeds']} noise "
        f"seed(s); label files: " + ", ".join(f"{n} ({c} requests)" for n, c in header["files"].items())
        + (
            f"; Fréchet distance between {header['real_images']} real images and {header['frechet_images']} generated "
            "ones (seed 0) for label sets drawn from the same data."
            if header["real_images"]
            else "."
        ),
        "",
        NOTES,
    ]  # fmt: skip
    md = [*intro]
    for title, columns, rows in tables(header, results, training):
        md += ["", f"## {title}", "", markdown_table(columns, rows)]
    md += ["", "## Figures", ""] + [f"![{title}]({path})" for title, path in figures + pictures]
    (out / "report.md").write_text("\n".join(md) + "\n")
    write_json(out / "report.json", {**header, "results": results, "training": training})
    write_html(out, intro, tables(header, results, training), figures + pictures)
    return out / "report.md"


def write_html(out: Path, intro: list[str], all_tables: list, pictures: list[tuple[str, str]]) -> None:
    def image(path: str) -> str:
        data = base64.b64encode((out / path).read_bytes()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path)}">'

    body = [f"<h1>{html.escape(intro[0][2:])}</h1>"] + [f"<p>{html.escape(line)}</p>" for line in intro[1:] if line]
    for title, columns, rows in all_tables:
        body.append(f"<h2>{html.escape(title)}</h2><table><tr>")
        body.append("".join(f"<th>{html.escape(str(c))}</th>" for c in columns) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows]
        body.append("</table>")
    body.append("<h2>Figures</h2>")
    body += [f"<figure>{image(path)}<figcaption>{html.escape(title)}</figcaption></figure>" for title, path in pictures]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        "img{max-width:100%;image-rendering:pixelated}figure{margin:1.5em 0}"
    )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>condgen report</title>'
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
    (out / "report.html").write_text(page)
