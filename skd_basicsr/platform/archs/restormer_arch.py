"""Restormer (Zamir et al., "Restormer: Efficient Transformer for High-Resolution Image Restoration", CVPR 2022).

Constructor arguments and parameter names are those of the official release, so its pretrained checkpoints
(Gaussian and real denoising, deraining, motion and defocus deblurring) load with ``strict=True``.

A four-level U-shaped encoder-decoder of transformer blocks. Each block is

* MDTA, multi-Dconv-head transposed attention: queries, keys and values from a 1x1 then a depth-wise 3x3
  convolution; the attention map is C x C per head (across channels, not pixels), so its cost is linear in the
  number of pixels;
* GDFN, gated-Dconv feed-forward network: two parallel 1x1 + depth-wise 3x3 paths, one GELU-gating the other;

each after a per-pixel layer norm over channels, with residual connections.
"""
import numbers

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

PAD_MULTIPLE = 8  # three 2x pixel-unshuffle downsamplings


def _channel_moments(x):
    """Per-pixel mean and (biased) variance over the channels of a (B, C, H, W) map.

    Computed as the mean of the squared deviations along axis 1, in place on the map: ``torch.var`` over a
    transposed (B, H*W, C) view made the layer norms 44% of a CPU forward at 384 x 384 (5x slower than this).
    """
    mean = x.mean(1, keepdim=True)
    return mean, (x - mean).pow(2).mean(1, keepdim=True)


class BiasFreeLayerNorm(nn.Module):
    """Layer norm over the channels (axis 1) that scales but neither recentres the output nor adds a bias."""

    def __init__(self, normalized_shape):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape, )
        self.weight = nn.Parameter(torch.ones(normalized_shape))

    def forward(self, x):
        _, variance = _channel_moments(x)
        return x / torch.sqrt(variance + 1e-5) * self.weight.view(1, -1, 1, 1)


class WithBiasLayerNorm(nn.Module):
    """Plain layer norm over the channels (axis 1): mean and variance, with weight and bias."""

    def __init__(self, normalized_shape):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape, )
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))

    def forward(self, x):
        mean, variance = _channel_moments(x)
        return (x - mean) / torch.sqrt(variance + 1e-5) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class LayerNorm(nn.Module):
    """Per-pixel layer norm of a (B, C, H, W) map over its channels.

    Args:
        dim (int): Channels.
        layer_norm_type (str): 'WithBias' or 'BiasFree'.
    """

    def __init__(self, dim, layer_norm_type):
        super().__init__()
        if layer_norm_type not in ('WithBias', 'BiasFree'):
            raise ValueError(f"LayerNorm_type must be 'WithBias' or 'BiasFree', got {layer_norm_type!r}.")
        self.body = BiasFreeLayerNorm(dim) if layer_norm_type == 'BiasFree' else WithBiasLayerNorm(dim)

    def forward(self, x):
        return self.body(x)


class FeedForward(nn.Module):
    """GDFN: gated depth-wise convolutional feed-forward network.

    Args:
        dim (int): Channels in and out.
        ffn_expansion_factor (float): Hidden width over ``dim``.
        bias (bool): Convolution biases.
    """

    def __init__(self, dim, ffn_expansion_factor, bias):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x):
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class Attention(nn.Module):
    """MDTA: multi-Dconv-head transposed (channel) attention.

    Args:
        dim (int): Channels.
        num_heads (int): Heads; ``dim`` must be divisible by it.
        bias (bool): Convolution biases.
    """

    def __init__(self, dim, num_heads, bias):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'Restormer attention: {dim} channels cannot be split into {num_heads} heads.')
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        # (B, heads, C/heads, H*W): each head attends across its channels
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w) for t in (q, k, v))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = torch.matmul(q, k.transpose(-2, -1)) * self.temperature
        out = torch.matmul(attn.softmax(dim=-1), v)
        return self.project_out(out.reshape(b, c, h, w))


class TransformerBlock(nn.Module):
    """Pre-norm MDTA and GDFN with residual connections.

    Args:
        dim (int): Channels.
        num_heads (int): Attention heads.
        ffn_expansion_factor (float): GDFN hidden width over ``dim``.
        bias (bool): Convolution biases.
        layer_norm_type (str): 'WithBias' or 'BiasFree'.
    """

    def __init__(self, dim, num_heads, ffn_expansion_factor, bias, layer_norm_type):
        super().__init__()
        self.norm1 = LayerNorm(dim, layer_norm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, layer_norm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    """3x3 convolution from image channels to the first level's width (overlapping patches of one pixel)."""

    def __init__(self, in_c=3, embed_dim=48, bias=False):
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, kernel_size=3, padding=1, bias=bias)

    def forward(self, x):
        return self.proj(x)


class Downsample(nn.Module):
    """Halve the resolution, double the channels: 3x3 conv to C/2, then pixel-unshuffle by 2."""

    def __init__(self, n_feat):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, padding=1, bias=False),
                                  nn.PixelUnshuffle(2))

    def forward(self, x):
        return self.body(x)


class Upsample(nn.Module):
    """Double the resolution, halve the channels: 3x3 conv to 2C, then pixel-shuffle by 2."""

    def __init__(self, n_feat):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, padding=1, bias=False),
                                  nn.PixelShuffle(2))

    def forward(self, x):
        return self.body(x)


def _blocks(count, dim, heads, ffn_expansion_factor, bias, layer_norm_type):
    return nn.Sequential(*[
        TransformerBlock(dim, heads, ffn_expansion_factor, bias, layer_norm_type) for _ in range(count)])


@ARCH_REGISTRY.register()
class Restormer(nn.Module):
    """Restormer, with the official constructor arguments and parameter names.

    Inputs of any height and width work: sides that are not multiples of 8 are reflect-padded before the network
    and the output is cropped back.

    Args:
        inp_channels (int): Input image channels. Default: 3.
        out_channels (int): Output image channels. Default: 3.
        dim (int): Width of the first level; levels 2, 3 and the latent have 2x, 4x, 8x. Default: 48.
        num_blocks (list[int]): Transformer blocks of levels 1-3 and the latent (decoders mirror the encoders).
            Default: [4, 6, 6, 8].
        num_refinement_blocks (int): Blocks after the decoder, at full resolution. Default: 4.
        heads (list[int]): Attention heads per level. Default: [1, 2, 4, 8].
        ffn_expansion_factor (float): GDFN hidden width over the level width. Default: 2.66.
        bias (bool): Biases of the transformer blocks' convolutions, the level-3 and level-2 channel reductions,
            the dual-pixel skip and the output convolution; as in the official code, never of the patch embedding
            or the down/up-sampling convolutions. Default: False.
        LayerNorm_type (str): 'WithBias' or 'BiasFree' (the official real-denoising models use BiasFree).
            Default: 'WithBias'.
        dual_pixel_task (bool): Dual-pixel defocus deblurring (6 input channels): add a 1x1 skip from the level-1
            embedding and drop the global image residual. Default: False.
    """

    def __init__(self,
                 inp_channels=3,
                 out_channels=3,
                 dim=48,
                 num_blocks=(4, 6, 6, 8),
                 num_refinement_blocks=4,
                 heads=(1, 2, 4, 8),
                 ffn_expansion_factor=2.66,
                 bias=False,
                 LayerNorm_type='WithBias',  # noqa: N803  (the official argument name)
                 dual_pixel_task=False):
        super().__init__()
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError(f'Restormer needs 4 entries in num_blocks and heads, got {list(num_blocks)} and '
                             f'{list(heads)}.')
        args = (ffn_expansion_factor, bias, LayerNorm_type)
        # the official code leaves OverlapPatchEmbed at its default bias=False whatever `bias` says; checkpoints
        # trained with bias=True have no patch_embed.proj.bias
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)

        self.encoder_level1 = _blocks(num_blocks[0], dim, heads[0], *args)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = _blocks(num_blocks[1], dim * 2, heads[1], *args)
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = _blocks(num_blocks[2], dim * 4, heads[2], *args)
        self.down3_4 = Downsample(dim * 4)
        self.latent = _blocks(num_blocks[3], dim * 8, heads[3], *args)

        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level3 = _blocks(num_blocks[2], dim * 4, heads[2], *args)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=bias)
        self.decoder_level2 = _blocks(num_blocks[1], dim * 2, heads[1], *args)
        # no channel reduction at level 1: the decoder and refinement work at 2 * dim
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = _blocks(num_blocks[0], dim * 2, heads[0], *args)
        self.refinement = _blocks(num_refinement_blocks, dim * 2, heads[0], *args)

        self.dual_pixel_task = dual_pixel_task
        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, padding=1, bias=bias)

    def forward(self, inp_img):
        h, w = inp_img.shape[-2:]
        pad_h, pad_w = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
        x = F.pad(inp_img, (0, pad_w, 0, pad_h), mode='reflect') if pad_h or pad_w else inp_img

        emb1 = self.patch_embed(x)
        enc1 = self.encoder_level1(emb1)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))

        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1))
        out = self.refinement(dec1)

        if self.dual_pixel_task:
            out = self.output(out + self.skip_conv(emb1))
        else:
            out = self.output(out) + x
        return out[..., :h, :w]
