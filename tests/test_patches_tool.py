"""`basicsr patches` (skd_basicsr/tools/patch_images.py): the official DFWB patching (512 x 512, overlap 96, images
whose sides both exceed 800; smaller ones kept whole), names, centre crops, and refusals before anything is written."""
import os
import re

import cv2
import numpy as np
import pytest

from skd_basicsr.tools.patch_images import main, starts, windows


def write(folder, name, shape, seed=0):
    os.makedirs(folder, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    cv2.imwrite(str(folder / name), img)
    return img


def read(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_starts_cover_the_axis_and_end_flush():
    assert starts(1100, 512, 96) == [0, 416, 588]
    assert starts(900, 512, 96) == [0, 388]
    assert starts(512, 512, 96) == [0]
    assert windows((700, 900, 3), 512, 96, 800) is None  # one side not over 800: kept whole
    assert windows((801, 801), 512, 96, 800) == [(0, 0), (0, 289), (289, 0), (289, 289)]


def test_dfwb_defaults_cut_large_images_and_keep_small_ones(tmp_path, capsys):
    big = write(tmp_path / 'DIV2K', '0001.png', (1100, 900, 3))
    small = write(tmp_path / 'BSD400', 'test_001.png', (180, 180), seed=1)  # gray, as DnCNN's Train400
    out = tmp_path / 'DFWB'
    assert main(['--input', str(tmp_path / 'DIV2K'), str(tmp_path / 'BSD400'), '--output', str(out)]) == 0
    names = sorted(os.listdir(out))
    assert names == ['BSD400-test_001.png'] + [f'DIV2K-0001-{n}.png' for n in range(1, 7)]
    corners = [(0, 0), (0, 388), (416, 0), (416, 388), (588, 0), (588, 388)]  # row by row
    for n, (top, left) in enumerate(corners, 1):
        assert np.array_equal(read(out / f'DIV2K-0001-{n}.png'), big[top:top + 512, left:left + 512])
    assert np.array_equal(read(out / 'BSD400-test_001.png'), small)  # whole, still one channel
    assert '2 image(s): 1 cut into patches, 1 kept whole; 7 file(s)' in capsys.readouterr().out


def test_paired_folders_cut_one_by_one_keep_matching_names(tmp_path):
    for side in ('input', 'target'):
        write(tmp_path / side, 'GOPR0372_07_00_000047.png', (720, 1280, 3))
        assert main(['--input', str(tmp_path / side), '--output', str(tmp_path / f'{side}_patches'), '--size', '512',
                     '--overlap', '256', '--min-side', '0']) == 0
    assert os.listdir(tmp_path / 'input_patches') and \
        sorted(os.listdir(tmp_path / 'input_patches')) == sorted(os.listdir(tmp_path / 'target_patches'))
    assert len(os.listdir(tmp_path / 'input_patches')) == 2 * 4  # rows [0, 208], columns [0, 256, 512, 768]


def test_centre_crops(tmp_path):
    img = write(tmp_path / 'test', 'frame.png', (720, 1280, 3))
    assert main(['--input', str(tmp_path / 'test'), '--output', str(tmp_path / 'crops'), '--size', '256',
                 '--centre']) == 0
    assert os.listdir(tmp_path / 'crops') == ['frame.png']
    assert np.array_equal(read(tmp_path / 'crops' / 'frame.png'), img[232:488, 512:768])


@pytest.mark.parametrize('setup, args, message', [
    (lambda d: write(d / 'in', 'a.b.png', (8, 8)), [], r'extra dots'),
    (lambda d: (d / 'in').mkdir(), [], r'has no images'),
    (lambda d: (write(d / 'in', 'a.png', (8, 8)), (d / 'out').mkdir()), [], r'--output .*out exists'),
    (lambda d: write(d / 'in', 'a.png', (8, 8)), ['--overlap', '512'], r'--overlap at least 0 and less than --size'),
    (lambda d: write(d / 'in', 'a.png', (8, 8)), ['--centre', '--size', '16'], r'a\.png is 8 x 8, smaller than the'),
    (lambda d: (d / 'in').mkdir() or (d / 'in' / 'bad.png').write_bytes(b'not a png'), [], r'bad\.png does not decode'),
])
def test_refusals_name_the_problem(tmp_path, capsys, setup, args, message):
    setup(tmp_path)
    assert main(['--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')] + args) == 2
    err = capsys.readouterr().err
    assert err.startswith('basicsr patches: error: ')
    assert re.search(message, err), err
