"""Train TS-CAM: ``python train/run.py --preset {cub,ilsvrc,fashion} [--field value ...]``.

``--preset fashion-cnn`` trains the CNN CAM baseline of the paper's Table 5 the same way.

Every field of the recipe is an option (``--help`` lists them with each preset's value).
``--resume RUN_FOLDER`` continues a run exactly where its last saved state left it; options
given with it override the saved config. Several processes:
``torchrun --nproc_per_node=N train/run.py --preset cub --data PATH``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from tscam_core.errors import TSCAMError
from tscam_core.recipes import PRESETS, TrainConfig, preset_config
from tscam_core.training import Interrupted, resume_config, train


def _preset_note(name: str) -> str:
    values = [f"{preset}: {PRESETS[preset][name]}" for preset in PRESETS if name in PRESETS[preset]]
    return f" [{'; '.join(values)}]" if values else ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train/run.py", description=__doc__.split("\n\n")[0],
        epilog="Values in [brackets] are the presets' own; an option given on the command line wins.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from a recipe (paper Sec. 4.1 for cub/ilsvrc)")
    parser.add_argument("--resume", metavar="RUN_FOLDER", help="continue the run saved in this folder")
    for field in dataclasses.fields(TrainConfig):
        if field.name == "preset":
            continue
        option = "--" + field.name.replace("_", "-")
        help_text = f"{field.metadata['help']} (default: {field.default!r}){_preset_note(field.name)}"
        kwargs = dict(dest=field.name, default=argparse.SUPPRESS, help=help_text.replace("%", "%%"))
        if field.type in ("bool", bool):
            parser.add_argument(option, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            kind = {"int": int, "float": float, "str": str}[str(field.type)]
            parser.add_argument(option, type=kind, choices=field.metadata.get("choices"), **kwargs)
    return parser


def resolve(args: argparse.Namespace) -> TrainConfig:
    """The run's config: saved (on resume) or preset or defaults, then the options given."""
    given = {k: v for k, v in vars(args).items() if k not in ("preset", "resume")}
    if args.resume:
        saved = resume_config(args.resume)
        return dataclasses.replace(saved, **given)
    if args.preset:
        return preset_config(args.preset, **given)
    config = TrainConfig.from_dict(given)
    if not config.data:
        raise ValueError("no dataset: pass --data PATH or a --preset")
    return config


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = resolve(args)
        run_dir = train(config, resume=args.resume)
    except Interrupted as stop:
        print(f"\n{stop}", file=sys.stderr)
        return 128 + stop.signum
    except (TSCAMError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"run folder: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
