"""What this package's datasets do to a training image that BasicSR's lack: reading that names the file, and
reflect-padding an image smaller than the crop.

Restormer's training sets hold images smaller than the largest crop (Rain13K's BSD-sized pictures are 481 x 321,
BSD400 in DFWB is 180 x 180), and Restormer's own datasets pad them to the crop, at the bottom and right by
reflection, before cropping. :func:`pad_to_crop` does the same for one image, :func:`pad_pair_to_crop` for an lq/gt
pair at any scale; :func:`decode_image` decodes one image or names the file it could not decode, and
:func:`to_float` converts a crop of it as BasicSR converts whole images.
"""
import cv2
import numpy as np

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')  # what folders of images are read for


def decode_image(file_client, path, key, dataset, flag='color'):
    """Read and decode one image as the file's 8-bit samples, HWC (BGR, as BasicSR reads), naming the file when it
    fails.

    The datasets crop (and pad) these samples and only then convert the crop with :func:`to_float`: the values are
    those of BasicSR's ``imfrombytes(..., float32=True)`` of the whole image, without converting pixels the crop
    drops, and decoded images held in memory (``cache_data``) stay a quarter of their float size.

    Args:
        file_client (FileClient): BasicSR's file client.
        path (str): Path or LMDB key of the image.
        key (str): Client key ('gt' or 'lq').
        dataset (str): Name of the dataset class, for the message.
        flag (str): 'color' or 'grayscale'. Default: 'color'.

    Returns:
        ndarray: The image, uint8 (h, w, c), c = 1 for grayscale.

    Raises:
        ValueError: When the bytes do not decode, or decode to an image of zero size.
    """
    from basicsr.utils import imfrombytes

    try:
        img = imfrombytes(file_client.get(path, key), flag=flag, float32=False)
    except (cv2.error, AttributeError, TypeError) as err:
        raise ValueError(f'{dataset}: cannot decode {path} ({err}).') from None
    if img is None or img.size == 0:
        raise ValueError(f'{dataset}: cannot decode {path} (no image, or an image of zero size).')
    return img if img.ndim == 3 else img[..., None]


def to_float(img):
    """8-bit samples to float32 in [0, 1], as BasicSR's ``imfrombytes(..., float32=True)`` converts them; always a
    new array, so that BasicSR's in-place flips never reach a decoded image held in memory."""
    return img.astype(np.float32) / 255.


def pad_to_crop(img, size):
    """Reflect-pad an HWC image at the bottom and right so that both sides are at least ``size``.

    Reflection repeats as often as needed (cv2's BORDER_REFLECT: ``cba|abc|cba``), so an image far smaller than the
    crop is padded too. An image already large enough is returned as it is.

    Args:
        img (ndarray): (h, w, c) image.
        size (int): The smallest side wanted.

    Returns:
        ndarray: (max(h, size), max(w, size), c).
    """
    h, w = img.shape[:2]
    return _pad(img, max(0, size - h), max(0, size - w))


def pad_pair_to_crop(img_gt, img_lq, gt_size, scale=1):
    """Pad an lq/gt pair so that a ``gt_size`` crop (``gt_size // scale`` on the lq) fits; both stay aligned.

    The lq is padded to at least ``gt_size // scale`` on each side, and the gt by ``scale`` times as many pixels, so
    that a gt of ``scale`` times the lq's size stays so.

    Returns:
        tuple[ndarray, ndarray]: The padded gt and lq.
    """
    h, w = img_lq.shape[:2]
    pad_h, pad_w = max(0, gt_size // scale - h), max(0, gt_size // scale - w)
    return _pad(img_gt, pad_h * scale, pad_w * scale), _pad(img_lq, pad_h, pad_w)


def _pad(img, pad_h, pad_w):
    if not (pad_h or pad_w):
        return img
    padded = cv2.copyMakeBorder(img, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT)
    return padded.reshape(padded.shape[:2] + img.shape[2:])  # cv2 drops a single channel axis
