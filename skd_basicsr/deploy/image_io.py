"""Images in and out of a restoration network: 8- and 16-bit PNG, JPEG, TIFF and BMP, gray or colour.

The network decides the channels (a gray network turns a colour photo gray, a colour network repeats a gray one over
three channels); the file decides the bit depth, which the output keeps. Conversion to and from tensors is BasicSR's
``img2tensor`` / ``tensor2img`` (RGB order, values in [0, 1]).
"""
import glob
import os
from os import path as osp

import cv2
import numpy as np

from skd_basicsr.platform.data.transforms import IMAGE_EXTENSIONS

MAX_VALUE = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}


class ImageReadError(ValueError):
    """A file that does not decode as an 8- or 16-bit image."""


def list_images(spec):
    """The image files named by ``spec``: one file, the images directly in a folder, or a glob pattern; sorted.

    Raises:
        FileNotFoundError: When ``spec`` names nothing.
    """
    if osp.isfile(spec):
        return [spec]
    if osp.isdir(spec):
        names = sorted(n for n in os.listdir(spec) if n.lower().endswith(IMAGE_EXTENSIONS))
        paths = [osp.join(spec, n) for n in names if osp.isfile(osp.join(spec, n))]
        if not paths:
            raise FileNotFoundError(f'{spec} has no images ({", ".join(IMAGE_EXTENSIONS)}).')
        return paths
    paths = sorted(p for p in glob.glob(spec, recursive=True) if osp.isfile(p))
    if not paths:
        raise FileNotFoundError(f'{spec}: no such file or folder, and no file matches it as a pattern.')
    return paths


def read_image(path, channels):
    """Read an image as float32 H x W x C in [0, 1], BGR, with ``channels`` (1 or 3) channels.

    Args:
        path (str): The file.
        channels (int): The network's input channels: 1 converts colour to gray, 3 repeats gray.

    Returns:
        tuple[ndarray, dtype]: the image and the file's sample type (uint8 or uint16), which the output keeps.

    Raises:
        ImageReadError: When the file does not decode or holds samples other than 8- or 16-bit integers.
    """
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageReadError(f'{path}: does not decode as an image.')
    if img.dtype not in MAX_VALUE:
        raise ImageReadError(f'{path}: {img.dtype} samples; only 8- and 16-bit images are supported.')
    depth = img.dtype
    img = img.astype(np.float32) / MAX_VALUE[depth]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]  # the network restores colour; transparency is not carried over
    gray = img.ndim == 2 or img.shape[2] == 1
    if channels == 1:
        img = img.reshape(img.shape[0], img.shape[1]) if gray else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        return img[..., None], depth
    if channels != 3:
        raise ValueError(f'networks with {channels} input channels are not images this tool can read.')
    return (cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR) if gray else img), depth


def image_to_tensor(img):
    """H x W x C BGR float image to a 1 x C x H x W RGB tensor."""
    from basicsr.utils import img2tensor

    return img2tensor(img, bgr2rgb=True, float32=True).unsqueeze(0)


def tensor_to_image(tensor, depth):
    """1 x C x H x W RGB tensor in [0, 1] to an H x W (x C) BGR array of sample type ``depth`` (uint8 or uint16)."""
    from basicsr.utils import tensor2img

    img = tensor2img(tensor, rgb2bgr=True, out_type=np.float32)
    return (img * MAX_VALUE[np.dtype(depth)]).round().astype(depth)


def write_image(img, path):
    """Write with BasicSR's ``imwrite`` (creates the folder); raises IOError when the format refuses the image."""
    from basicsr.utils import imwrite

    imwrite(img, path)
