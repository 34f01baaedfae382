"""The demo under load: 16 gradio_client users for 60 s against ``python app.py`` on 127.0.0.1.

    python scripts/load_test.py [--users 16] [--duration 60] [--checkpoint PATH] [--output docs/reliability.md]

Each simulated user has its own session and its own image (a unique name and size), and
loops over uploads, threshold moves, class/layer changes and the odd bad upload until the
time is up. Every answer is checked to be about the user's own image: a session that sees
another's image counts as a leak. Reports failed requests, p50/p95 latency per event, and
the server's resident memory before and after; the figures go between the ``load`` markers
of docs/reliability.md. Loopback only, bounded in users and time, stops by itself.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
SHIPPED = ROOT / "checkpoints" / "tscam_fashion.safetensors"
HOST = "127.0.0.1"
REQUEST_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class AppProcess:
    """``python app.py`` on the loopback address at a free port, stopped (and reaped) on exit."""

    def __init__(
        self,
        checkpoint: str | Path,
        examples: str | Path | None = None,
        startup_timeout_s: float = 180,
        env: dict[str, str] | None = None,
    ) -> None:
        self.checkpoint, self.examples, self.startup_timeout_s = str(checkpoint), examples, startup_timeout_s
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}/"
        self.process: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="tscam-app-", suffix=".log", delete=False)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        return Path(self._log.name).read_text(errors="replace")[-chars:]

    def rss_bytes(self) -> int:
        """The server's resident memory, from /proc (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def __enter__(self) -> AppProcess:
        command = [
            sys.executable,
            str(APP),
            "--checkpoint",
            self.checkpoint,
            "--host",
            HOST,
            "--port",
            str(self.port),
        ]
        if self.examples is not None:
            command += ["--examples", str(self.examples)]
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **self.extra_env}
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError(f"app.py did not answer within {self.startup_timeout_s} s:\n{self.log_tail()}")

    def __exit__(self, *_exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


# --- the simulated users ---------------------------------------------------------------------

OPERATIONS = (("redraw_box", 0.55), ("redraw", 0.25), ("analyze", 0.15), ("bad_upload", 0.05))


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    refused_as_expected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, operation: str, seconds: float) -> None:
        with self.lock:
            self.latencies[operation].append(seconds)


def user_images(folder: Path, users: int) -> list[Path]:
    """One image per user with its own name and size, so an answer names whose image it is about."""
    paths = []
    for user in range(users):
        rng = np.random.default_rng(user)
        width, height = 64 + 8 * user, 48 + 4 * user
        pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        pixels[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] += 150  # an object-like blob
        path = folder / f"user{user:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return paths


def run_user(
    url: str, user: int, image: Path, bad: Path, depth: int, num_classes: int, deadline: float, tally: Tally
) -> None:
    from gradio_client import Client, handle_file

    rng = random.Random(user)
    try:
        client = Client(url, verbose=False, download_files=False)
    except Exception as error:  # counted, never raised: the report must come out
        tally.failures.append(f"user {user}: could not connect ({error})")
        return
    expected = {"name": image.name, "size": Image.open(image).size}

    def call(operation: str, api_name: str, **params: object) -> object:
        started = time.perf_counter()
        result = client.submit(**params, api_name=api_name).result(timeout=REQUEST_TIMEOUT_S)
        tally.add(operation, time.perf_counter() - started)
        return result

    def check(record: dict, operation: str) -> None:
        seen = record["image"]
        if seen["name"] != expected["name"] or (seen["width"], seen["height"]) != expected["size"]:
            tally.leaks.append(f"user {user} {operation}: got {seen}, expected {expected}")

    def controls() -> dict[str, object]:
        return {
            "layer_mode": "last" if rng.random() < 0.5 else "first",
            "layer_count": rng.randint(1, depth),
            "threshold": round(rng.random(), 2),
            "variant": rng.choice(["tscam", "trans_attention", "trans_cam"]),
            "opacity": 0.5,
            "colormap": rng.choice(["jet", "viridis"]),
        }

    operation = "analyze"  # the first request of every user, even past the deadline (the warm-up)
    while True:
        try:
            if operation == "analyze":
                outputs = call("analyze", "/analyze", image=handle_file(str(image)), **controls())
                check(outputs[-2], operation)
            elif operation == "redraw_box":
                check(call("redraw_box", "/redraw_box", chosen_class=None, **controls())[-1], operation)
            elif operation == "redraw":
                check(
                    call("redraw", "/redraw", chosen_class=rng.randrange(num_classes), **controls())[-1], operation
                )
            else:
                try:
                    call("bad_upload", "/analyze", image=handle_file(str(bad)), **controls())
                    tally.failures.append(f"user {user}: a broken upload was accepted")
                except Exception as error:
                    if type(error).__name__ != "AppError" or not str(error).startswith(f"{bad.name}:"):
                        raise
                    with tally.lock:
                        tally.refused_as_expected += 1
        except Exception as error:
            tally.failures.append(f"user {user} {operation}: {type(error).__name__}: {error}")
        if time.monotonic() >= deadline:
            return
        operation = rng.choices([o for o, _ in OPERATIONS], [w for _, w in OPERATIONS])[0]


def rss_at(timeline: list[tuple[float, int]], seconds: float) -> float:
    """The last RSS sample taken at or before ``seconds``."""
    earlier = [rss for at, rss in timeline if at <= seconds]
    return float(earlier[-1] if earlier else timeline[0][1]) if timeline else float("nan")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def model_shape(checkpoint: str) -> tuple[int, int]:
    from tscam_core import read_checkpoint

    info, state = read_checkpoint(checkpoint)
    depth = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    return depth, info.num_classes


def tiny_checkpoint(folder: Path) -> Path:
    """A small random TS-CAM, for machines without the shipped checkpoint."""
    from tscam_core import ModelInfo, Preprocess, build_model, save_checkpoint

    kwargs = {"img_size": 64, "patch_size": 16, "depth": 4, "embed_dim": 96, "num_heads": 3}
    info = ModelInfo(
        arch="vit_tiny_patch16_224",
        num_classes=10,
        timm_kwargs=kwargs,
        preprocess=Preprocess((64, 64), (64, 64)).to_config(),
    )
    return save_checkpoint(build_model(info), info, folder / "tiny.safetensors")


def run(checkpoint: str, users: int, duration_s: float) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="tscam-load-"))
    try:
        if not Path(checkpoint).is_file():
            print(f"{checkpoint} not found: using a small random checkpoint", file=sys.stderr)
            checkpoint = str(tiny_checkpoint(workdir))
        depth, num_classes = model_shape(checkpoint)
        images = user_images(workdir, users)
        tally = Tally()
        with AppProcess(checkpoint, examples=workdir / "no-examples") as server:
            warm = Tally()
            run_user(server.url, 99, images[0], workdir / "broken.jpg", depth, num_classes, 0, warm)
            rss_start = server.rss_bytes()
            timeline = []  # (seconds since start, RSS)
            deadline = time.monotonic() + duration_s
            threads = [
                threading.Thread(
                    target=run_user,
                    args=(
                        server.url,
                        user,
                        images[user],
                        workdir / "broken.jpg",
                        depth,
                        num_classes,
                        deadline,
                        tally,
                    ),
                    daemon=True,
                )
                for user in range(users)
            ]
            started = time.monotonic()
            load_before = os.getloadavg()[0]
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                timeline.append((time.monotonic() - started, server.rss_bytes()))
                if time.monotonic() > deadline + REQUEST_TIMEOUT_S + 30:
                    tally.failures.append("users still running long after the deadline")
                    break
                time.sleep(0.5)
            wall = time.monotonic() - started
            rss_end = server.rss_bytes()
        every = [s for values in tally.latencies.values() for s in values]
        return {
            "checkpoint": os.path.relpath(checkpoint, ROOT)
            if checkpoint.startswith(str(ROOT))
            else "a small random checkpoint",
            "users": users,
            "duration_s": duration_s,
            "wall_s": wall,
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "requests": len(every) + len(tally.failures),
            "failures": tally.failures,
            "leaks": tally.leaks,
            "refused_as_expected": tally.refused_as_expected,
            "p50_ms": percentile(every, 50) * 1000,
            "p95_ms": percentile(every, 95) * 1000,
            "per_operation": {
                op: (len(v), percentile(v, 50) * 1000, percentile(v, 95) * 1000)
                for op, v in sorted(tally.latencies.items())
            },
            "rss_start_mb": rss_start / 2**20,
            "rss_end_mb": rss_end / 2**20,
            "rss_peak_mb": max([rss_end, *(rss for _, rss in timeline)]) / 2**20,
            "rss_by_quarter_mb": [rss_at(timeline, duration_s * q / 4) / 2**20 for q in (1, 2, 3, 4)],
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(figures: dict) -> str:
    lines = [
        "## The demo under load",
        "",
        f"Written by `python scripts/load_test.py --users {figures['users']} --duration {figures['duration_s']:g}` "
        f"on {time.strftime('%Y-%m-%d')}: {figures['users']} `gradio_client` users, each with its own session and "
        f"image, for {figures['duration_s']:g} s against `python app.py` on 127.0.0.1 "
        f"({figures['checkpoint']}; {figures['cpus']} CPU cores running the server and the {figures['users']} clients, "
        f"load average {figures['load_before']:.1f} before the run).",
        "",
        f"- Requests: {figures['requests']:,}; failed: **{len(figures['failures'])}**; "
        f"broken uploads refused with a clear message, as expected: {figures['refused_as_expected']}.",
        f"- State leaks between sessions (an answer about another user's image): **{len(figures['leaks'])}**.",
        f"- Latency over all requests: p50 **{figures['p50_ms']:.0f} ms**, p95 **{figures['p95_ms']:.0f} ms** "
        "(client side, queueing included).",
        f"- Server memory (RSS): {figures['rss_start_mb']:.0f} MB after warm-up, {figures['rss_end_mb']:.0f} MB at the end "
        f"(**{figures['rss_end_mb'] - figures['rss_start_mb']:+.0f} MB**), peak {figures['rss_peak_mb']:.0f} MB; "
        "at each quarter of the run: "
        + ", ".join(f"{mb:.0f}" for mb in figures["rss_by_quarter_mb"])
        + " MB.",
        "",
        "| event | requests | p50 (ms) | p95 (ms) |",
        "|---|---|---|---|",
    ]
    for operation, (count, p50, p95) in figures["per_operation"].items():
        lines.append(f"| {operation} | {count:,} | {p50:.0f} | {p95:.0f} |")
    for title, items in (("Failures", figures["failures"]), ("Leaks", figures["leaks"])):
        if items:
            lines += ["", f"{title} (first 10):", *(f"- {item}" for item in items[:10])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (at most 600)")
    parser.add_argument("--checkpoint", default=str(SHIPPED))
    parser.add_argument("--output", default=str(ROOT / "docs" / "reliability.md"))
    parser.add_argument("--no-write", action="store_true", help="print the figures only")
    args = parser.parse_args(argv)
    if not 1 <= args.users <= 64 or not 0 < args.duration <= 600:
        parser.error("--users must be within 1..64 and --duration within 0..600 s")
    figures = run(args.checkpoint, args.users, args.duration)
    text = report(figures)
    print(text)
    if not args.no_write:
        from tscam_core.testing.report import replace_section

        replace_section(args.output, "load", text, title="Reliability")
        print(f"written to {args.output}")
    return 1 if figures["failures"] or figures["leaks"] else 0


if __name__ == "__main__":
    sys.exit(main())
