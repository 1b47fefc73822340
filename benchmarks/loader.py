"""Loader benchmark: the memory-mapped decode cache against reading the whole cache into memory, on the real i-CLEVR
set and on a rendered set ten times its size (180,000 images).

For each dataset and mode, a fresh process loads the set (mapped: ``load_dataset``; in memory: the same cache file
read whole with ``np.load``, the loader before the cache was mapped), then draws random training batches of 64 from
one rank's shard of two (every other image, as a two-process run does) and reports the load time, batches' images/s
and the process's resident memory before loading, after it and after the batches, split into private memory
(RssAnon: what the process holds itself) and mapped file pages (RssFile: the pages of the cache file it touched,
which the kernel can drop and read again). The first, uncached load (decoding every PNG and writing the cache) is
timed once per dataset. The page cache is not dropped between runs (that needs root), so "mapped" reads hit memory
when the file was read recently.

Run by hand on an otherwise idle machine:
    python benchmarks/loader.py [--real ../shared/iclevr] [--n 180000] [--batches 2000]
Writes benchmarks/results/loader_cpu.json (--results names another folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA, add_results_argument, result_header, write_result

MEASURE = """
import json, sys, time
import numpy as np, torch
from condgen.data import iclevr
from condgen.data.iclevr import load_dataset, random_batch

def rss_mb():  # resident MB: [private memory, mapped file pages]
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return [round(int(fields[key].split()[0]) / 1024) for key in ("RssAnon", "RssFile")]

root, mode, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(1)
before = rss_mb()
start = time.perf_counter()
data = load_dataset(root, progress=False)
if mode == "memory":
    (entry,) = iclevr.cache_dir().glob("images-*.npy")
    data.images = torch.from_numpy(np.load(entry))
load_seconds = time.perf_counter() - start
after_load = rss_mb()
shard = torch.arange(0, len(data), 2)  # rank 0 of 2
generator = torch.Generator().manual_seed(0)
start = time.perf_counter()
for _ in range(batches):
    x, y = random_batch(data, shard, 64, True, generator)
seconds = time.perf_counter() - start
print(json.dumps({
    "images": len(data), "load_seconds": round(load_seconds, 3),
    "batch_images_per_second": round(batches * 64 / seconds, 1),
    "resident_mb_private_and_file_before": before, "resident_mb_private_and_file_after_load": after_load,
    "resident_mb_private_and_file_after_batches": rss_mb(),
}))
"""


def measure(root: Path, mode: str, batches: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(root), mode, str(batches)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=DATA, help="real i-CLEVR folder")
    parser.add_argument("--n", type=int, default=180_000, help="images of the rendered set (default 180000)")
    parser.add_argument("--batches", type=int, default=2000, help="batches of 64 per measurement (default 2000)")
    add_results_argument(parser)
    args = parser.parse_args()

    from condgen.data.iclevr import load_dataset
    from condgen.data.synth import synthesize_dataset

    work = Path(tempfile.mkdtemp(prefix="condgen-loader-"))
    record = {**result_header(None), "batch_size": 64, "datasets": {}}
    try:
        render = synthesize_dataset(work / "synth", n=args.n, seed=0)
        record["render_seconds"] = round(render["seconds"], 1)
        for name, root in (("iclevr", args.real), (f"synth_{args.n}", work / "synth")):
            # a cache folder per dataset, so the in-memory mode finds its one entry; the subprocesses inherit it
            os.environ["CONDGEN_CACHE_DIR"] = str(work / f"cache-{name}")
            start = time.perf_counter()
            load_dataset(root, progress=False)  # decode every image and build the cache entry
            entry = {"first_load_seconds (decode + cache write)": round(time.perf_counter() - start, 1)}
            for mode in ("memory", "mapped"):
                entry[mode] = measure(root, mode, args.batches)
                print(name, mode, json.dumps(entry[mode]), flush=True)
            record["datasets"][name] = entry
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_result("loader_cpu", record, args.results)


if __name__ == "__main__":
    main()
