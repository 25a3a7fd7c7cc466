"""``basicsr lmdb``: pack an image folder into BasicSR's LMDB format, refusing what BasicSR's reader would trip on.

BasicSR reads an LMDB's keys from meta_info.txt as the part of each line before the first dot, so a file named
``a.b.png`` becomes key ``a`` and is never found; two files with one stem collide; an existing output would be
mixed with the new one. Those are refused before anything is written. Packing itself is BasicSR's
``make_lmdb_from_imgs``.
"""
import os
import sys
from os import path as osp

from skd_basicsr.platform.errors import OptionError
from skd_basicsr.tools import command_parser, run_command
from skd_basicsr.platform.data.transforms import IMAGE_EXTENSIONS


class LmdbToolError(OptionError):
    """An input that would make an LMDB BasicSR cannot read."""


def image_names(folder):
    """Image file names directly in ``folder`` (BasicSR's LMDB keys are flat), sorted."""
    if not osp.isdir(folder):
        raise LmdbToolError(f'--input {folder} is not a folder.')
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise LmdbToolError(f'--input {folder} has no images ({", ".join(IMAGE_EXTENSIONS)}).')
    return names


def check_keys(names, folder):
    """Keys (names without extension) that BasicSR can read back, or an error listing the offenders."""
    dotted = [n for n in names if osp.splitext(n)[0].count('.')]
    if dotted:
        raise LmdbToolError(f'{len(dotted)} file name(s) in {folder} have extra dots, e.g. {dotted[:3]}: BasicSR '
                            'cuts LMDB keys at the first dot, so these would never be found. Rename them first.')
    keys = [osp.splitext(n)[0] for n in names]
    seen, duplicates = set(), []
    for key in keys:
        if key in seen:
            duplicates.append(key)
        seen.add(key)
    if duplicates:
        raise LmdbToolError(f'{len(duplicates)} key(s) in {folder} belong to several files (same name, other '
                            f'extension), e.g. {duplicates[:3]}.')
    return keys


def check_match(keys, match_folder):
    """GT and LQ LMDBs are read in pairs by key: refuse folders whose names differ."""
    other = {osp.splitext(n)[0] for n in image_names(match_folder)}
    only_here = sorted(set(keys) - other)
    only_there = sorted(other - set(keys))
    if only_here or only_there:
        raise LmdbToolError(f'the names in --input and --match {match_folder} differ: {len(only_here)} only in '
                            f'--input (e.g. {only_here[:3]}), {len(only_there)} only in --match (e.g. '
                            f'{only_there[:3]}). Paired datasets need the same names on both sides.')


def build_parser():
    parser = command_parser('basicsr lmdb', __doc__)
    parser.add_argument('--input', required=True, help='folder of images (not recursive)')
    parser.add_argument('--output', required=True, help='the LMDB to create; must end with .lmdb and not exist')
    parser.add_argument('--match', default=None, help='a folder whose image names must be the same (GT for LQ)')
    parser.add_argument('--compress-level', type=int, default=1, help='PNG compression 0-9 inside the LMDB')
    parser.add_argument('--n-thread', type=int, default=2, help='reading threads')
    return parser


def main(argv=None):
    return run_command(build_parser(), run, argv)


def run(args):
    """Check the names and pack ``args.input`` into the LMDB ``args.output``."""
    if not args.output.endswith('.lmdb'):
        raise LmdbToolError(f'--output {args.output} must end with .lmdb (BasicSR checks it).')
    if osp.exists(args.output):
        raise LmdbToolError(f'--output {args.output} exists; remove it or choose another name.')
    if not 0 <= args.compress_level <= 9:
        raise LmdbToolError(f'--compress-level must be within 0-9, got {args.compress_level}.')
    names = image_names(args.input)
    keys = check_keys(names, args.input)
    if args.match:
        check_match(keys, args.match)

    from basicsr.utils.lmdb_util import make_lmdb_from_imgs

    # BasicSR sizes the map from the first image alone; a folder of mixed sizes then overflows it
    total = sum(osp.getsize(osp.join(args.input, n)) for n in names)
    map_size = max(10 * total, 1 << 24)
    make_lmdb_from_imgs(args.input, args.output, names, keys, batch=5000, compress_level=args.compress_level,
                        multiprocessing_read=args.n_thread > 1, n_thread=args.n_thread, map_size=map_size)
    print(f'Wrote {len(keys)} images to {args.output} (meta_info.txt lists them).')
    return 0


if __name__ == '__main__':
    sys.exit(main())
