#!/usr/bin/env python3
"""Put several evaluated models in one Table 9 (the paper's rows, then one row per model).

Reads the rows each evaluation wrote (<folder>/results/*.json of eval/run_all.py or a single-task
script; nothing is evaluated again) and writes <out>/table9.md, table9.csv and table9.png. The
notes say what each row rests on and which cells of two models are not comparable (other image
counts or protocols).

Example: python eval/compare.py runs/baseline/eval runs/pixmix/eval --out runs/comparison
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from dali_pixmix.cli_help import DefaultsHelpFormatter  # noqa: E402
from dali_pixmix.evaluation import cli  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("folders", nargs="+", metavar="FOLDER",
                   help="--out folders of earlier evaluations, one per model")
    p.add_argument("--names", nargs="+", metavar="NAME", default=None,
                   help="the models' names in the table, one per folder (default: each "
                        "folder's name, or its parent's for <run>/eval)")
    p.add_argument("--out", required=True, help="where table9.md, .csv and .png go")
    args = p.parse_args(argv)
    from dali_pixmix.evaluation.compare import compare_evaluations

    paths = compare_evaluations(args.folders, args.names, args.out)
    print(Path(paths[0]).read_text())
    print("wrote " + ", ".join(str(path) for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
