"""Data generation speed: N Sudoku puzzles (30 clues, uniqueness proven) and N 10x10 mazes.

  python benchmarks/data_gen.py            # 50,000 of each, all cores (targets: <= 120 s, <= 60 s)
  python benchmarks/data_gen.py --n 5000 --workers 1
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import save  # noqa: E402
from mdm import data  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = {"n": args.n, "workers": args.workers}
    for name, spec in (("sudoku", data.DatasetSpec("sudoku", args.n, 0, seed=123)),
                       ("maze10", data.DatasetSpec("maze", args.n, 0, maze_n=10, seed=123))):
        start = time.perf_counter()
        out = data.generate_splits(spec, workers=args.workers)
        seconds = time.perf_counter() - start
        assert len(out["train"]["tokens"]) == args.n
        results[name] = {"seconds": seconds, "per_second": args.n / seconds}
        print(f"{name}: {args.n} in {seconds:.1f} s = {args.n / seconds:.0f}/s with {args.workers} workers")
    save("data_gen", results, args.out)


if __name__ == "__main__":
    main()
