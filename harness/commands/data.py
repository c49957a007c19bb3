"""``run_bench.py data listops|pathfinder``: write a generated data set in the official LRA
layout, which ``lra --data-dir`` then reads as it reads the release (records say "generated")."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from harness.errors import UsageError

DEFAULT_COUNTS = {"listops": (2000, 200, 200), "pathfinder": (1600, 200, 200)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=list(DEFAULT_COUNTS))
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-val", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a set already in --out (refused otherwise)")
    listops = parser.add_argument_group("listops only (defaults: the official grammar)")
    listops.add_argument("--min-length", type=int, default=None,
                         help="keep expressions with L > this (official 500)")
    listops.add_argument("--max-length", type=int, default=None,
                         help="keep expressions with L < this (official 2000)")
    listops.add_argument("--max-depth", type=int, default=None, help="official 10")
    pathfinder = parser.add_argument_group("pathfinder only")
    pathfinder.add_argument("--resolution", type=int, default=None,
                            help="image side (32: pathfinder, 128: pathx; any >= 16)")
    pathfinder.add_argument("--difficulty", choices=("easy", "medium", "hard"), default=None)


def writable_folder(out: Path) -> None:
    """--out must be (or become) a folder this process can write; one clear line if not."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create it ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: not writable")


def claim_target(target: Path, overwrite: bool) -> None:
    """The set's folder must be absent or empty; with --overwrite an existing set is removed
    first, so that no file of it (an official release, a larger earlier set) stays mixed in."""
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise UsageError(f"--out: {target} already holds a data set; add --overwrite to "
                             f"replace it or choose another --out")
        shutil.rmtree(target)
    elif target.exists() and not target.is_dir():
        raise UsageError(f"--out: {target} exists and is not a folder")


def run(args: argparse.Namespace) -> int:
    defaults = DEFAULT_COUNTS[args.dataset]
    counts = {name: value if value is not None else default
              for name, value, default in zip(("n_train", "n_val", "n_test"),
                                              (args.n_train, args.n_val, args.n_test), defaults)}
    if args.dataset == "listops":
        if args.resolution is not None or args.difficulty is not None:
            raise UsageError("--resolution and --difficulty are for pathfinder, not listops")
        from harness.accuracy.tasks.listops import (SUBDIR, GrammarConfig, check_grammar,
                                                    write_dataset)

        official = GrammarConfig()
        config = GrammarConfig(
            max_depth=official.max_depth if args.max_depth is None else args.max_depth,
            min_length=official.min_length if args.min_length is None else args.min_length,
            max_length=official.max_length if args.max_length is None else args.max_length)
        check_grammar(config)
        writable_folder(args.out)
        claim_target(args.out / SUBDIR, args.overwrite)
        target = write_dataset(args.out, seed=args.seed, config=config, **counts)
        window = "official" if config.is_official() else "NON-official"
        print(f"wrote generated ListOps ({window} grammar settings {config}) to {target}: "
              f"{counts['n_train']}/{counts['n_val']}/{counts['n_test']} train/val/test")
    else:
        if any(v is not None for v in (args.min_length, args.max_length, args.max_depth)):
            raise UsageError("--min-length/--max-length/--max-depth are for listops")
        from harness.accuracy.tasks.pathfinder import DIFFICULTIES, write_dataset

        resolution = 32 if args.resolution is None else args.resolution
        writable_folder(args.out)
        difficulty = DIFFICULTIES[args.difficulty or "hard"]
        claim_target(args.out / f"pathfinder{resolution}" / difficulty, args.overwrite)
        target = write_dataset(args.out, seed=args.seed, resolution=resolution,
                               difficulty=args.difficulty or "hard", **counts)
        task = "pathfinder" if resolution == 32 else ("pathx" if resolution == 128 else
                                                      f"(resolution {resolution}: no LRA task)")
        print(f"wrote generated pathfinder-style images {resolution}x{resolution} to {target}: "
              f"{counts['n_train']}/{counts['n_val']}/{counts['n_test']} train/val/test; "
              f"read with: run_bench.py lra --task {task} --data-dir {args.out}")
    print("records of runs on this set will say data_source=generated")
    return 0
