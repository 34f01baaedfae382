"""The README's first hour, every line as written, in order, in a copy of the repository.

Lines that would take long run with smaller sizes (fewer images, a few training steps); servers
are started, asked for their page and stopped. Package installs are what CI itself runs first,
so those lines are checked for what they install, not run again.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from scripts.load_test import free_port
from tscam_core.datasets.fashion import DEFAULT_SOURCE
from tscam_core.results import load_results

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
#: Appended to a line (by its first words) so that it finishes in seconds; later options win in argparse.
SMALLER = {
    "python -m tscam_core.datasets.fashion": ["--test", "24"],
    "python train/run.py": ["--generate-train", "64", "--generate-val", "16", "--generate-test", "24", "--epochs", "1",
                            "--pretrain-epochs", "1", "--pretrain-images", "64", "--batch-size", "16",
                            "--max-steps", "2", "--workers", "0"],
}


def first_hour_lines() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## The first hour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def copy_of_the_repository(folder: Path) -> Path:
    """The files git tracks, as they are in the working tree: a fresh clone of this change."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    return folder


def serve_once(command: list[str], cwd: Path, env: dict, url: str, timeout_s: float = 180) -> str:
    """Start a server, return its first page's text, stop it."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return response.read().decode(errors="replace")
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"{shlex.join(command)} did not answer at {url} within {timeout_s} s")
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.skipif(not DEFAULT_SOURCE.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_every_first_hour_line_works_in_order(tmp_path):
    lines = first_hour_lines()
    assert [line.split()[:3] for line in lines] == [
        ["python", "-m", "pip"], ["python", "app.py"], ["apt-get", "install", "dataset-fashion-mnist"],
        ["python", "-m", "tscam_core.datasets.fashion"], ["python", "-m", "tscam_core.evaluate"],
        ["streamlit", "run", "dashboard/app.py"], ["python", "train/run.py", "--preset"]]
    repo = copy_of_the_repository(tmp_path / "tscam")
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    for line in lines:
        words = shlex.split(line.replace("python ", f"{sys.executable} ", 1) if line.startswith("python ") else line)
        if "pip" in words:  # what CI ran before the tests: the requirements and this checkout
            assert words[-3:] == ["-r", "requirements.txt", "-e"] or words[-1] == "."
            continue
        if words[0] == "apt-get":  # Debian's package, found where the generator looks
            assert DEFAULT_SOURCE.is_dir()
            continue
        if words[1:2] == ["app.py"]:
            port = free_port()
            page = serve_once(words, repo, {**env, "GRADIO_SERVER_PORT": str(port)}, f"http://127.0.0.1:{port}/")
            assert "TS-CAM explorer" in page
            continue
        if words[0] == "streamlit":
            port = free_port()
            page = serve_once([sys.executable, "-m", *words], repo,
                              {**env, "STREAMLIT_SERVER_PORT": str(port), "STREAMLIT_SERVER_HEADLESS": "true"},
                              f"http://127.0.0.1:{port}/_stcore/health")
            assert page == "ok"
            assert load_results(repo / words[words.index("--results") + 1]).parsed.dataset.num_images == 24
            continue
        words += next((extra for prefix, extra in SMALLER.items() if line.startswith(prefix)), [])
        done = subprocess.run(words, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        if "tscam_core.evaluate" in line:
            assert "CAM threshold 0.2: the checkpoint's, chosen on its validation images" in done.stderr
            assert (repo / "results" / "fashion" / "summary.json").is_file()
    assert (repo / "runs").is_dir() and (repo / "checkpoints" / "tscam_fashion.safetensors").is_file()
