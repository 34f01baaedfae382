"""The study's table from its runs' JSON files, with bootstrap 95% intervals over the held-out images.

    python experiments/table.py /tmp/study/runs/*.json
    python experiments/table.py --paired /tmp/study/runs/F.json /tmp/study/runs/G.json

``--paired A B``: A minus B on the same held-out images, per image, for every figure of both runs.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from tscam_core.intervals import bootstrap_interval

MAPS = ("tscam", "trans_attention", "trans_cam")


def column(record: dict, key: str, name: str | None = None) -> np.ndarray:
    """Per-image hits; runs logged before hits were kept give a column with the same count (for a 0/1
    column the bootstrap depends on nothing else)."""
    entry = record if name is None else record[name]
    if key in entry:
        return np.array([c == "1" for c in entry[key]])
    rate = record["top1_cls"] if name is None else entry["best"]
    return np.arange(record["images"]) < round(rate * record["images"])


def paired(first: dict, second: dict) -> None:
    if not all("cls_hits" in record for record in (first, second)):
        raise SystemExit("--paired needs runs that logged per-image hits")
    print(f"| {first['name']} minus {second['name']} | Top-1 Cls | TS-CAM | TransAttention | TransCAM |")
    print("|---|---|---|---|---|")
    cells = [bootstrap_interval(column(first, "cls_hits").astype(int) - column(second, "cls_hits")).percent()]
    for name in MAPS:
        cells.append(bootstrap_interval(column(first, "hits", name).astype(int) - column(second, "hits", name)).percent())
    print("| paired difference | " + " | ".join(cells) + " |")


def main(paths: list[str]) -> None:
    if paths[0] == "--paired":
        paired(*(json.loads(open(path).read()) for path in paths[1:3]))
        return
    print("| run | Top-1 Cls | TS-CAM GT-known | TransAttention GT-known | TransCAM GT-known "
          "| TS-CAM - TransAttention (paired) | stage 1 s | stage 2 s |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        record = json.loads(open(path).read())
        cells = [bootstrap_interval(column(record, "cls_hits")).percent()]
        for name in MAPS:
            cells.append(bootstrap_interval(column(record, "hits", name)).percent() + f" @{record[name]['threshold']}")
        if "hits" in record["tscam"]:
            difference = column(record, "hits", "tscam").astype(int) - column(record, "hits", "trans_attention")
            cells.append(bootstrap_interval(difference).percent())
        else:
            cells.append("-")
        print(f"| {record['name']} | " + " | ".join(cells) +
              f" | {record.get('stage1_s', 'cached')} | {record.get('stage2_s')} |")


if __name__ == "__main__":
    main(sys.argv[1:])
