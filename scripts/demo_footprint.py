"""What the demo costs to start and to hold its models: the figures docs/demo.md's Space section cites.

    python scripts/demo_footprint.py [--checkpoint SOURCES]

Starts ``python app.py`` on 127.0.0.1 with the given sources (comma-separated, the default: the
shipped checkpoint and an ImageNet DeiT-S), times how long it takes to answer (Python, the libraries
and the first model loaded), then picks each other model once through the API and reports the
time of that first pick (the load, and one image explained) and the server's resident memory after
it. Without network, give the DeiT-S as ``timm:deit_small_patch16_224?file=PATH``: weights of
the same size give the same figures, whatever their values.
"""

from __future__ import annotations

import argparse
import os
import time

from load_test import ROOT, SHIPPED, AppProcess  # the sibling script: run as python scripts/demo_footprint.py

from tscam_core.model_zoo import label_of

IMAGE = ROOT / "examples" / "photos" / "chelsea.jpg"
MIB = 2**20


def measure(sources: str) -> list[tuple[str, float, float]]:
    """(step, seconds, server RSS in MiB) for the start and for each model's first pick."""
    from gradio_client import Client, handle_file

    rows = []
    started = time.perf_counter()
    with AppProcess(sources, startup_timeout_s=600) as app:
        rows.append(("start, first model loaded, page answering", time.perf_counter() - started,
                     app.rss_bytes() / MIB))
        client = Client(app.url, verbose=False, download_files=False)
        for label in [label_of(source.strip()) for source in sources.split(",")][1:]:
            started = time.perf_counter()
            client.predict(model=label, image=handle_file(str(IMAGE)), api_name="/choose_model")
            rows.append((f"first pick of {label} (load + one image)", time.perf_counter() - started,
                         app.rss_bytes() / MIB))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=f"{SHIPPED},timm:deit_small_patch16_224",
                        help="comma-separated sources, as TSCAM_MODELS lists them")
    args = parser.parse_args()
    rows = measure(args.checkpoint)
    print(f"{os.cpu_count()} CPU cores; `python scripts/demo_footprint.py --checkpoint {args.checkpoint}`\n")
    print("| step | seconds | server memory (RSS) |\n|---|---|---|")
    for step, seconds, rss in rows:
        print(f"| {step} | {seconds:.1f} | {rss:.0f} MiB |")


if __name__ == "__main__":
    main()
