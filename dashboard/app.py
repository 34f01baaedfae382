"""TS-CAM results dashboard: ``streamlit run dashboard/app.py [-- --results DIR [DIR ...]] [--results-root DIR]``.

This script picks and reads the results folders (sidebar) and hands them to the page shown;
the pages live in ``dashboard/views``. Without ``--results`` it opens on the shipped
checkpoint's results on the Cluttered Fashion-MNIST benchmark, making them on first start.
With a results root (``--results-root`` or ``$TSCAM_RESULTS_ROOT``) only folders inside it open.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

from dashboard import runs, shipped

st.set_page_config(page_title="TS-CAM results", page_icon=":material/center_focus_strong:", layout="wide")

options = runs.command_line(sys.argv[1:])
if options.root is not None and not options.root.is_dir():
    st.error(f"The results root {options.root} is not a folder: start with `--results-root DIR`.")
    st.stop()

if "shipped_default" not in st.session_state:  # a new session: start on the command line's folders
    shipped_default = options.folders is None and runs.serves(runs.SHIPPED_RUN, options.root)
    default = [runs.SHIPPED_RUN] if shipped_default else []  # a root without the shipped run opens on nothing
    st.session_state.chosen_folders = [str(p) for p in (options.folders or default)]
    st.session_state.shipped_default = shipped_default

if st.session_state.shipped_default:
    st.session_state.shipped_default = False  # checked (and made) once per session, not once per rerun
    if not shipped.is_current() and not shipped.make_with_progress():
        st.session_state.chosen_folders = []


def _add_folder() -> None:
    folder = st.session_state.new_folder.strip()
    if folder and folder not in st.session_state.chosen_folders:
        st.session_state.chosen_folders = [*st.session_state.chosen_folders, folder]
    st.session_state.new_folder = ""


with st.sidebar:
    found = map(str, runs.discovered_folders(options.root))
    st.multiselect("Results folders", list(dict.fromkeys([*st.session_state.chosen_folders, *found])),
                   key="chosen_folders", help="Runs written by `python -m tscam_core.evaluate ... --out DIR`.")
    st.text_input("Add a results folder", key="new_folder", on_change=_add_folder, placeholder="results/my-run")

loaded, problems = runs.load_runs(st.session_state.chosen_folders, options.root)
for problem in problems:
    st.error(f"Cannot show {problem}")
st.session_state.runs = loaded

here = Path(__file__).parent
st.navigation([
    st.Page(here / "views" / "overview.py", title="Overview", icon=":material/monitoring:", default=True),
    st.Page(here / "views" / "failures.py", title="Failure browser", icon=":material/image_search:"),
    st.Page(here / "views" / "compare.py", title="Compare two runs", icon=":material/compare:"),
    st.Page(here / "views" / "methods.py", title="Compare methods", icon=":material/leaderboard:"),
]).run()
