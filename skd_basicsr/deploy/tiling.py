"""Run an image-to-image network on an image too large for memory, as overlapping tiles blended without seams.

The image is padded (reflection) to the multiple the network needs, cut into tiles of ``tile`` pixels that overlap
by ``overlap``, and each tile's output is weighted by a window that is 1 inside the tile, falls to 0 towards each edge
that borders another tile (a raised cosine over the middle half of the overlap, 0 on its outer quarter), and stays 1
at the image's own edges. The sum of the weighted tiles is divided by the sum of the weights, so where the tiles agree
the result is their common value. Hence:

* one tile covering the image is one forward pass, the untiled output exactly;
* a fully convolutional network whose receptive-field radius is at most ``overlap / 4`` gives every weighted pixel the
  value the whole image gives, so the tiled output equals the untiled one (to float rounding);
* a network with global operations (Restormer's channel attention) sees only its tile, so the result approximates.
"""
import math

import torch

from skd_basicsr.platform.network_spec import crop_output, pad_to_multiple

__all__ = ['pad_to_multiple', 'tiled_forward']


def tile_starts(length, tile, overlap):
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap`` between neighbours."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    # the last tile is aligned to the end, so it overlaps its neighbour by more than ``overlap``, never less
    starts.append(length - tile)
    return starts


def edge_ramp(size, overlap, device):
    """Window weights of the first ``size`` pixels after an edge shared with another tile (0 at the edge, then 1)."""
    pos = torch.arange(size, dtype=torch.float64, device=device) + 0.5
    quarter = overlap / 4
    u = ((pos - quarter) / (2 * quarter)).clamp(0, 1) if overlap > 0 else torch.ones_like(pos)
    return torch.sin(u * math.pi / 2)**2


def axis_window(start, size, length, overlap, device):
    """1-D window of a tile spanning ``[start, start + size)`` of ``length``: ramps only at edges inside the image."""
    window = torch.ones(size, dtype=torch.float64, device=device)
    if start > 0:
        window = window * edge_ramp(size, overlap, device)
    if start + size < length:
        window = window * edge_ramp(size, overlap, device).flip(0)
    return window


def tiled_forward(fn, img, tile=None, overlap=0, multiple=1):
    """Apply ``fn`` (NCHW tensor to NCHW tensor, any integer scale) to ``img`` tile by tile, blending the tiles.

    Args:
        fn (callable): The network, or anything mapping a padded NCHW tensor to its restored NCHW tensor.
        img (Tensor): Input, N x C x H x W.
        tile (int | None): Tile side in input pixels, a multiple of ``multiple``; None or a tile covering the image
            runs one forward pass. Default: None.
        overlap (int): Pixels shared by neighbouring tiles, less than ``tile``. Default: 0.
        multiple (int): The input height and width the network needs a multiple of (8 for Restormer). Default: 1.

    Returns:
        Tensor: The output, cropped to the input's size times the network's scale.
    """
    if tile is not None and (tile <= 0 or tile % multiple):
        raise ValueError(f'tile {tile} must be a positive multiple of {multiple}.')
    if tile is not None and not 0 <= overlap < tile:
        raise ValueError(f'tile overlap {overlap} must be at least 0 and less than the tile ({tile}).')
    padded, (h, w) = pad_to_multiple(img, multiple)
    ph, pw = padded.shape[-2:]
    if tile is None or (tile >= ph and tile >= pw):
        return crop_output(fn(padded), (h, w), pw)

    th, tw = min(tile, ph), min(tile, pw)
    out = weight = scale = None
    for y in tile_starts(ph, th, overlap):
        for x in tile_starts(pw, tw, overlap):
            piece = fn(padded[..., y:y + th, x:x + tw])
            if out is None:
                scale = piece.shape[-1] // tw
                out = torch.zeros(*piece.shape[:2], ph * scale, pw * scale, dtype=torch.float64, device=piece.device)
                weight = torch.zeros(ph * scale, pw * scale, dtype=torch.float64, device=piece.device)
            wy = axis_window(y * scale, th * scale, ph * scale, overlap * scale, piece.device)
            wx = axis_window(x * scale, tw * scale, pw * scale, overlap * scale, piece.device)
            window = wy[:, None] * wx[None, :]
            ys, xs = slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale)
            out[..., ys, xs] += piece.double() * window
            weight[ys, xs] += window
    return (out / weight).to(img.dtype)[..., :h * scale, :w * scale]
