"""`medflow-synth`: write deterministic multi-payer claim files with planted defects."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from medflow_assets.synth.generator import PAYER_SHARES, generate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="medflow-synth", description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("data/landing"), help="landing folder to write into")
    ap.add_argument("--lines", type=int, default=6000, help="claim lines before duplicates (all payers)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--defect-rate", type=float, default=0.02, help="share of rows with one planted defect")
    ap.add_argument("--rows-per-file", type=int, default=1_000_000)
    ap.add_argument("--files-per-payer", type=int, default=None)
    ap.add_argument("--payers", nargs="+", choices=sorted(PAYER_SHARES), default=None)
    ap.add_argument("--manifest-dir", type=Path, default=None,
                    help="where the defect manifest goes (default: <out>_manifest beside --out)")
    ap.add_argument("--truth", action="store_true", help="also write the typed truth of every row (parquet)")
    ap.add_argument("--row-offset", type=int, default=0,
                    help="start row numbering here (a later batch brings new claims, not duplicates)")
    ap.add_argument("--file-tag", default="claims", help="files are named <payer>_<tag>_NNN")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        files = generate(args.out, args.lines, seed=args.seed, defect_rate=args.defect_rate,
                         rows_per_file=args.rows_per_file, files_per_payer=args.files_per_payer,
                         manifest_dir=args.manifest_dir, truth=args.truth, payers=args.payers,
                         row_offset=args.row_offset, file_tag=args.file_tag)
    except ValueError as exc:
        print(f"medflow-synth: {exc}", file=sys.stderr)
        return 2
    for f in files:
        print(f"{f.path}: {f.lines} lines, {f.defects} planted defects")
    print(f"{sum(f.lines for f in files)} lines in {len(files)} files, {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
