"""``basicsr patches``: cut training images into overlapping patches as Restormer's preparation scripts do.

Restormer trains on patches, not on the downloaded images: ``generate_patches_dfwb.py`` cuts every DFWB image
whose sides both exceed 800 pixels into 512 x 512 patches that overlap by 96, and keeps the smaller images (BSD400,
many of WED's) whole; the SIDD and GoPro scripts cut every image (512, overlap 128 and 256). Without it, DFWB's
training mix moves from about 91% DIV2K/Flickr2K samples to about 40%. The defaults here are DFWB's.

Along each axis the patches start every ``size - overlap`` pixels and the last one is flush with the far edge, so
every pixel is covered; patch n (from 1, row by row) of ``NAME.png`` is written as ``NAME-n.png``, a kept image as
``NAME.png``. With several input folders each name is prefixed by its folder's name (``DIV2K-0001-1.png``), as the
official script names them, so the four DFWB sources can share one output folder. Paired data (SIDD, GoPro) is cut
one folder at a time with the same settings: images of one name and size get the same windows, so the input and
target patches keep matching names. ``--centre`` writes one centre crop per image instead (GoPro's 256 x 256
validation crops).

Names BasicSR's LMDB reader cannot take back (extra dots), images that do not decode and an existing output are
refused before anything is written; images are read and written losslessly (PNG, bit depth and channels kept).
"""
import os
import sys
from os import path as osp

from skd_basicsr.platform.errors import OptionError
from skd_basicsr.tools import command_parser, run_command
from skd_basicsr.tools.lmdb import check_keys, image_names

DFWB_SIZE, DFWB_OVERLAP, DFWB_MIN_SIDE = 512, 96, 800


def build_parser():
    parser = command_parser('basicsr patches', __doc__)
    parser.add_argument('--input', required=True, nargs='+', help='folder(s) of images (not their subfolders)')
    parser.add_argument('--output', required=True, help='folder to write the patches to; must not exist')
    parser.add_argument('--size', type=int, default=DFWB_SIZE, help=f'patch side in pixels (default {DFWB_SIZE})')
    parser.add_argument('--overlap', type=int, default=DFWB_OVERLAP,
                        help=f'pixels shared by neighbouring patches (default {DFWB_OVERLAP})')
    parser.add_argument('--min-side', type=int, default=DFWB_MIN_SIDE, dest='min_side',
                        help=f'cut only images whose sides both exceed this; smaller ones are kept whole (default '
                        f'{DFWB_MIN_SIDE}; 0 cuts every image at least --size on each side)')
    parser.add_argument('--centre', action='store_true', help='one centre crop of --size per image instead')
    return parser


def main(argv=None):
    return run_command(build_parser(), run, argv)


def starts(length, size, overlap):
    """Offsets of the patches along an axis of ``length``: every ``size - overlap``, the last flush with the end."""
    return list(range(0, length - size, size - overlap)) + [length - size]


def windows(shape, size, overlap, min_side, centre=False):
    """The (top, left) corners of the patches of an image of ``shape`` (h, w, ...), or None to keep it whole."""
    h, w = shape[:2]
    if centre:
        return [((h - size) // 2, (w - size) // 2)]
    if not (h > min_side and w > min_side and h >= size and w >= size):
        return None
    return [(top, left) for top in starts(h, size, overlap) for left in starts(w, size, overlap)]


def check_args(args):
    if osp.exists(args.output):
        raise OptionError(f'--output {args.output} exists; remove it or choose another folder.')
    if args.size <= 0 or not (args.centre or 0 <= args.overlap < args.size):
        raise OptionError(f'--size must be positive and --overlap at least 0 and less than --size; got --size '
                          f'{args.size}, --overlap {args.overlap}.')
    if len({osp.basename(osp.normpath(folder)) for folder in args.input}) != len(args.input):
        raise OptionError(f'--input folders {args.input} share a name, which prefixes their patches; rename one.')


def plan(args):
    """[(source path, output stem)] of every image, checked before anything is written."""
    sources = []
    for folder in args.input:
        names = image_names(folder)
        check_keys(names, folder)
        prefix = f'{osp.basename(osp.normpath(folder))}-' if len(args.input) > 1 else ''
        sources += [(osp.join(folder, name), prefix + osp.splitext(name)[0]) for name in names]
    return sources


def run(args):
    """Cut every image of ``args.input`` into ``args.output`` and report the counts."""
    import cv2

    check_args(args)
    sources = plan(args)
    os.makedirs(args.output)
    cut = whole = written = 0
    for path, stem in sources:
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None or img.size == 0:
            raise OptionError(f'{path} does not decode as an image.')
        if args.centre and (img.shape[0] < args.size or img.shape[1] < args.size):
            raise OptionError(f'{path} is {img.shape[0]} x {img.shape[1]}, smaller than the --centre crop '
                              f'{args.size}.')
        corners = windows(img.shape, args.size, args.overlap, args.min_side, args.centre)
        if corners is None:
            cv2.imwrite(osp.join(args.output, f'{stem}.png'), img)
            whole += 1
            written += 1
            continue
        for n, (top, left) in enumerate(corners, 1):
            patch = img[top:top + args.size, left:left + args.size]
            cv2.imwrite(osp.join(args.output, f'{stem}.png' if args.centre else f'{stem}-{n}.png'), patch)
        cut += 1
        written += len(corners)
    print(f'{len(sources)} image(s): {cut} cut into patches, {whole} kept whole; {written} file(s) in {args.output}.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
