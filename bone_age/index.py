"""python -m bone_age.index DICOM_DIR --out manifest.csv: a DICOM export -> a safe manifest.

Writes the manifest (pseudonymous subject ids, labels, paths) and ``index_report.csv`` (every
input file with a status and reason) beside it, and prints a summary. See
bone_age/data/indexing.py for the statuses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bone_age.data.indexing import (
    index_folder,
    summary,
    write_link_file,
    write_manifest,
    write_report,
)
from bone_age.data.pseudonym import (
    DEFAULT_KEY_FILE,
    Pseudonymizer,
    check_secret_location,
    load_or_create_key,
)
from bone_age.errors import EXIT_OK, EXIT_PARTIAL, command, fail
from bone_age.outputs import check_output_file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bone_age.index", description=__doc__.split("\n")[0])
    p.add_argument("dicom_dir", type=Path, help="folder of DICOM files (searched recursively)")
    p.add_argument("--out", type=Path, default=Path("manifest.csv"), help="manifest to write")
    p.add_argument("--report", type=Path, help="per-file report (default: index_report.csv "
                                               "beside the manifest)")
    p.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE,
                   help="secret pseudonym key, created (0600) on first use; keep it outside "
                        "the repository and outputs (default: %(default)s)")
    p.add_argument("--link-file", type=Path, help="also write subject_id -> Patient ID here, "
                                                  "for the data owner only (never by default)")
    p.add_argument("--split-side-by-side", action="store_true",
                   help="split a single image holding both views: left half anterior, right "
                        "half posterior (written as new files under split/ beside the manifest)")
    p.add_argument("--no-check-pixels", dest="check_pixels", action="store_false",
                   help="skip decoding the chosen views (faster; damaged or all-zero pixels "
                        "are then only found at training time)")
    p.add_argument("--age-range", type=float, nargs=2, default=(40.0, 80.0),
                   metavar=("MIN", "MAX"), help="ages outside are reported (and kept)")
    return p.parse_args(argv)


@command("index")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.dicom_dir.is_dir():
        return fail("index", f"{args.dicom_dir} is not a folder")
    report = args.report or args.out.resolve().parent / "index_report.csv"
    check_output_file(args.out, "manifest")
    check_output_file(report, "index report")
    outputs = [args.out.resolve().parent, args.dicom_dir]
    key_file = check_secret_location(args.key_file, outputs, "pseudonym key file")
    if args.link_file:
        check_output_file(args.link_file, "link file")
        check_secret_location(args.link_file, outputs, "link file")
    pseudo = Pseudonymizer(load_or_create_key(key_file))
    result = index_folder(args.dicom_dir, args.out, pseudo, args.split_side_by_side,
                          args.check_pixels, tuple(args.age_range), skip=[report])
    write_manifest(result, args.out)
    write_report(result, report)
    if args.link_file:
        write_link_file(result, args.link_file)
    print(summary(result))
    print(f"manifest: {args.out}\nreport:   {report}")
    return EXIT_OK if result.written else EXIT_PARTIAL


if __name__ == "__main__":
    sys.exit(main())
