#!/usr/bin/env python3
"""Write a DALI file list (`relative/path label` per line) for a folder of images.

--labels folder: class k = k-th sub-folder in lexicographic order (ImageFolder convention);
--labels zero: every image at any depth gets label 0 (OOD sets, mixing sets).
--verify decodes every file first and leaves broken ones out, listing them by name; without
an output list (`make_file_list.py FOLDER --verify`) it only lists the broken files (exit 1 when
there are any), which is the fix training and evaluation errors point to.
"""
import argparse
import sys

from dali_pixmix.data.file_lists import make_file_list
from dali_pixmix.data.images import find_broken_images, scan_images


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="folder of images (class sub-folders for --labels folder)")
    p.add_argument("out", nargs="?", default=None,
                   help="file list to write (omit it with --verify to only list broken files)")
    p.add_argument("--root", default=None,
                   help="paths are written relative to this folder (default: the list's folder; "
                        "pass the same folder as file_root to the DALI reader)")
    p.add_argument("--labels", choices=("folder", "zero"), default="folder",
                   help="how labels are assigned (default: folder)")
    p.add_argument("--verify", action="store_true",
                   help="decode each image and omit (and report) broken ones")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p, p.parse_args(argv)


def verify_only(folder: str, progress: bool) -> int:
    """Decode every image under `folder` (any depth); list the broken ones; 1 if any."""
    files = scan_images(folder)
    broken = find_broken_images(files, progress)
    for path in broken:
        print(f"broken: {path}")
    print(f"{len(broken)} of {len(files)} images under {folder} cannot be decoded" if broken
          else f"all {len(files)} images under {folder} decode")
    return 1 if broken else 0


def main(argv=None):
    parser, args = parse_args(argv)
    if args.out is None:
        if not args.verify:
            parser.error("give the file list to write, or --verify to only check the images")
        try:
            return verify_only(args.folder, not args.no_progress)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)  # one line, no usage text
            return 2
    try:
        summary = make_file_list(args.folder, args.out, root=args.root, labels=args.labels,
                                 verify=args.verify, progress=not args.no_progress,
                                 root_name="--root")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line, no usage text
        return 2
    for name in summary["broken"]:
        print(f"broken (omitted): {name}", file=sys.stderr)
    verified = f", {summary['num_broken']} broken omitted" if args.verify else ", not verified"
    print(f"file list: {summary['num_files']} images, {summary['num_classes']} classes"
          f"{verified} -> {summary['out']} (relative to {summary['root']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
