"""Check a search space, sample candidates at random, show their cost, dump their configs.

    python tools/sample_space.py search_spaces/tiny_synth.yaml
    python tools/sample_space.py SPACE --num 20 --seed 1 --out work_dirs/samples
    python tools/sample_space.py SPACE --no-complexity          # no model is built
    python tools/sample_space.py SPACE --out DIR --no-transfer  # architecture-only configs

Every dumped ``DIR/<key>.py`` is standalone: ``tools/train.py DIR/<key>.py`` retrains it.
"""

from __future__ import annotations

import argparse
import sys

from nasdet.cli import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space", help="search space YAML file")
    parser.add_argument("--num", type=int, default=8, help="candidates to sample (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="RandomSampler seed (default 0)")
    parser.add_argument("--out", help="write <key>.py configs and candidates.json here")
    parser.add_argument(
        "--no-complexity",
        action="store_true",
        help="skip building models for params/MACs and the budget check",
    )
    parser.add_argument(
        "--no-transfer",
        action="store_true",
        help="dump configs without applying the transfer strategy",
    )
    parser.add_argument(
        "--checkpoint", help="checkpoint for transfer strategies (overrides the space's)"
    )
    parser.add_argument("--cache", help="JSON file caching params/MACs per candidate")
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error("--num must be at least 1")
    if args.out:
        from nasdet.train.checks import check_output_dir

        check_output_dir(args.out, key="--out")

    import optuna

    from nasdet.space import SearchSpace
    from nasdet.space.summary import dump_candidates, format_table, summarize

    space = SearchSpace.from_yaml(args.space, cache_file=args.cache)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    candidates = [space.suggest(study.ask()) for _ in range(args.num)]
    rows = summarize(candidates, complexity=not args.no_complexity)
    print(format_table(space, rows))
    if args.out:
        paths = dump_candidates(
            candidates, rows, args.out, transfer=not args.no_transfer, checkpoint=args.checkpoint
        )
        print(f"wrote {len(paths)} configs and candidates.json to {args.out}")
    return 0


def run() -> None:
    """The ``nasdet-sample-space`` command."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    run()
