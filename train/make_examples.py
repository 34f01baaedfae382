"""Copy a few generated TEST-split images, one per class, into examples/ with their classes and GT boxes.

    python train/make_examples.py --data data/fashion-cluttered --count 6

examples/examples.json lists each file with its class (index and name) and its ground-truth
boxes ([x0, y0, x1, y1], half-open, image pixels), for the demo's examples.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from tscam_core.datasets import open_dataset
from tscam_core.errors import TSCAMError


def make_examples(data: Path, out: Path, count: int) -> list[dict]:
    dataset = open_dataset(data, "test")
    out.mkdir(parents=True, exist_ok=True)
    chosen, seen = [], set()
    for sample in dataset:
        if sample.label not in seen:
            seen.add(sample.label)
            chosen.append(sample)
        if len(chosen) == count:
            break
    entries = []
    for sample in chosen:
        name = f"{dataset.class_names[sample.label].replace('/', '-').replace(' ', '_').lower()}_{Path(sample.path).stem}.png"
        shutil.copyfile(sample.path, out / name)
        entries.append({"file": name, "class_index": sample.label, "class_name": dataset.class_names[sample.label],
                        "boxes": sample.boxes.tolist(), "source": str(Path(sample.path).resolve().relative_to(data.resolve()))})
    (out / "examples.json").write_text(json.dumps({"dataset": "Cluttered Fashion-MNIST, test split",
                                                    "box_format": "x0 y0 x1 y1, half-open, pixels",
                                                    "examples": entries}, indent=2) + "\n")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/fashion-cluttered"), help="generated benchmark folder")
    parser.add_argument("--out", type=Path, default=Path("examples"), help="output folder")
    parser.add_argument("--count", type=int, default=6, help="examples, one per class")
    args = parser.parse_args(argv)
    try:
        entries = make_examples(args.data, args.out, args.count)
    except (TSCAMError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(entries)} examples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
