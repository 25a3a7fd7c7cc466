"""The family rules of weight selection, one registry entry per architecture family.

A rule (:class:`FamilyRule`) holds what one family needs beyond the plain mechanics: the width layout of each of its
tensors (which axes concatenate heads, gate halves or skip parts), the buffers that depend only on the student's
configuration, the tensors whose names coincide with the teacher's but whose roles do not, and the tensor that reads
the input image. Families register with :func:`register_rule`; :data:`RULES` is the registry, keyed by the network's
class name. :data:`GENERIC` (a plain leading slice on every axis) is deliberately not registered: it is used only when
asked for. :func:`match_residual_scales` is a block-level fix that applies to every family.
"""
from dataclasses import dataclass
from typing import Callable, Optional

from skd_basicsr.distill.weight_selection.layout import heads, same, split


@dataclass(frozen=True)
class FamilyRule:
    """What weight selection needs to know about one architecture family.

    Args:
        name (str): The family (the network's class name, e.g. 'Restormer').
        layout (Callable[[Pair], dict]): The width layout of one student tensor: {axis: parts}, a leading slice on
            axes not named (:mod:`.layout`).
        own_buffers (tuple[str]): Last name parts of buffers that depend only on the student's own configuration
            (window size, shift, input size): kept as built.
        own_tensors (Callable | None): ``(student_state, teacher_state) -> names`` of parameters left to the student's
            own initialisation (no counterpart in the teacher's role). Default: None (none).
        input_weight (str | None): The weight that reads the input image; None: the first convolution in module
            order.
    """
    name: str
    layout: Callable
    own_buffers: tuple = ()
    own_tensors: Optional[Callable] = None
    input_weight: Optional[str] = None

    def own(self, student_state, teacher_state):
        """The student parameters this family leaves to the student's own initialisation."""
        return list(self.own_tensors(student_state, teacher_state)) if self.own_tensors else []


RULES = {}


def register_rule(name, own_buffers=(), own_tensors=None, input_weight=None):
    """Register the decorated layout function as the rule of the family ``name`` (see :class:`FamilyRule`).

    Returns:
        Callable: The decorator; it returns the layout function unchanged.

    Raises:
        ValueError: A family registered twice.
    """

    def register(layout):
        if name in RULES:
            raise ValueError(f'weight-selection rules for {name!r} are registered twice')
        RULES[name] = FamilyRule(name, layout, tuple(own_buffers), own_tensors, input_weight)
        return layout

    return register


def leading_rule(pair):
    """Every axis one group. Right wherever channels pass through in order, PixelShuffle and PixelUnshuffle
    included: shuffling by r maps channels [c r^2, (c + 1) r^2) to channel c (unshuffle the reverse), so the leading
    C r^2 channels before a shuffle are exactly the leading C after it. EDSR is all of this kind (its upsampling
    convs and PixelShuffle; its RGB mean is a plain attribute, not in the state dict)."""
    return {}


GENERIC = FamilyRule('generic', leading_rule)
register_rule('EDSR', input_weight='conv_first.weight')(leading_rule)

# --------------------------------------------------------------------------------------------------------------
# Restormer
# --------------------------------------------------------------------------------------------------------------
_RESTORMER_STAGES = ('encoder_level1', 'encoder_level2', 'encoder_level3', 'latent', 'decoder_level3', 'decoder_level2',
                     'decoder_level1', 'refinement')
# Downsample (conv to C/2, unshuffle by 2 -> 2C) and Upsample (conv to 2C, shuffle by 2 -> C/2) keep the leading
# channels leading (see leading_rule), so they and the encoders need no rule of their own.
# The level-1 decoder, refinement and output work on [upsampled level 2, encoder level 1] (and the dual-pixel
# skip_conv adds into that stream), so their channel axis is two parts of one level width each
_RESTORMER_LEVEL1_STREAM = ('decoder_level1', 'refinement')
_RESTORMER_CONCATENATIONS = {  # tensor: axis that reads or writes a two-part concatenation
    'reduce_chan_level3.weight': 1,  # [up4_3(latent), enc3]
    'reduce_chan_level2.weight': 1,  # [up3_2(dec3), enc2]
    'output.weight': 1,
    'skip_conv.weight': 0,
    'skip_conv.bias': 0,
}
# the role of each axis of a TransformerBlock tensor; None: one group (leading entries)
_RESTORMER_BLOCK_AXES = {
    'norm1.body.weight': ('stream', ),
    'norm1.body.bias': ('stream', ),
    'norm2.body.weight': ('stream', ),
    'norm2.body.bias': ('stream', ),
    'attn.temperature': ('heads', None, None),
    'attn.qkv.weight': ('qkv', 'stream', None, None),
    'attn.qkv.bias': ('qkv', ),
    'attn.qkv_dwconv.weight': ('qkv', None, None, None),
    'attn.qkv_dwconv.bias': ('qkv', ),
    'attn.project_out.weight': ('stream', 'per_head', None, None),
    'attn.project_out.bias': ('stream', ),
    'ffn.project_in.weight': ('gate', 'stream', None, None),
    'ffn.project_in.bias': ('gate', ),
    'ffn.dwconv.weight': ('gate', None, None, None),
    'ffn.dwconv.bias': ('gate', ),
    'ffn.project_out.weight': ('stream', None, None, None),
    'ffn.project_out.bias': ('stream', ),
}


@register_rule('Restormer', input_weight='patch_embed.proj.weight')
def restormer_rule(pair):
    """Heads in q, k, v and temperature, halves of the FFN gate, the two parts of each concatenated skip."""
    parts = pair.name.split('.')
    if parts[0] in _RESTORMER_STAGES:
        return _restormer_block(pair, '.'.join(parts[:2]), '.'.join(parts[2:]))
    if pair.name in _RESTORMER_CONCATENATIONS:
        axis = _RESTORMER_CONCATENATIONS[pair.name]
        return {axis: split(pair.sizes(pair.name, axis), 2)}
    return {}


def _restormer_block(pair, block, tail):
    """Width rule inside one TransformerBlock."""
    return {axis: _restormer_role(pair, block, role) for axis, role in enumerate(_RESTORMER_BLOCK_AXES[tail]) if role}


def _restormer_role(pair, block, role):
    """Parts of an axis with this role in ``block``."""
    width = pair.sizes(f'{block}.attn.project_out.weight')
    if role == 'stream':
        return split(width, 2) if block.split('.')[0] in _RESTORMER_LEVEL1_STREAM else None
    if role == 'gate':  # [gate | value]
        return split(pair.sizes(f'{block}.ffn.project_in.weight'), 2)
    head_counts = pair.sizes(f'{block}.attn.temperature')
    if role == 'heads':
        return heads(1, head_counts, head_counts)
    return heads(3 if role == 'qkv' else 1, head_counts, width)  # 'qkv': [q | k | v]; 'per_head': attention output


# --------------------------------------------------------------------------------------------------------------
# BasicSR's RRDBNet and SwinIR
# --------------------------------------------------------------------------------------------------------------
@register_rule('RRDBNet', input_weight='conv_first.weight')
def rrdbnet_rule(pair):
    """conv_k of a dense block reads [features, growth_1, ..., growth_{k-1}]: each part keeps its leading channels."""
    parts = pair.name.split('.')
    if len(parts) != 5 or parts[0] != 'body' or parts[3] == 'conv1' or parts[4] != 'weight':
        return {}
    rdb = '.'.join(parts[:3])
    growth = pair.sizes(f'{rdb}.conv1.weight')
    return {1: [pair.sizes('conv_first.weight')] + [growth] * (int(parts[3][len('conv'):]) - 1)}


def _swinir_own_tensors(student_state, teacher_state):
    """SwinIR's ``upsample.*`` when the two nets upsample differently: the names coincide, the roles do not.

    A 'pixelshuffle' SwinIR (classical SR) has ``conv_before_upsample`` and an ``upsample`` of x2 shuffle convolutions
    on 64 channels; a 'pixelshuffledirect' one (lightweight SR) has no ``conv_before_upsample`` and its ``upsample.0``
    maps the body straight to the image's channels times scale^2. A slice of one is no start for the other, so the
    student keeps its own initialisation there.
    """
    if ('conv_before_upsample.0.weight' in teacher_state) == ('conv_before_upsample.0.weight' in student_state):
        return []
    return [name for name in student_state if name.startswith('upsample.')]


# a shallower SwinIR may put a shifted teacher block where its own block does not shift: its mask stays its own
@register_rule('SwinIR',
               own_buffers=('relative_position_index', 'attn_mask'),
               own_tensors=_swinir_own_tensors,
               input_weight='conv_first.weight')
def swinir_rule(pair):
    """Heads in the qkv Linear, the proj input and the relative position bias table."""
    attn, _, tail = pair.name.rpartition('.attn.')
    if pair.name == 'absolute_pos_embed':
        return {1: same(pair.sizes(pair.name, 1), 'the number of patches (img_size) differs')}
    if tail not in ('relative_position_bias_table', 'qkv.weight', 'qkv.bias', 'proj.weight'):
        return {}
    table = f'{attn}.attn.relative_position_bias_table'
    head_counts = pair.sizes(table, 1)
    if tail == 'relative_position_bias_table':
        return {0: same(pair.sizes(table), 'the window size differs'), 1: heads(1, head_counts, head_counts)}
    width = pair.sizes(f'{attn}.attn.proj.weight')
    if tail == 'proj.weight':
        return {1: heads(1, head_counts, width)}
    return {0: heads(3, head_counts, width)}


# --------------------------------------------------------------------------------------------------------------
# block-level constants, whatever the family
# --------------------------------------------------------------------------------------------------------------
def match_residual_scales(state, student_net, teacher_net, to_teacher):
    """Residual blocks that scale their branch differently (EDSR-L: ``res_scale`` 0.1, EDSR-M: 1) get their last
    convolution scaled by teacher scale / student scale, so the selected block adds what the teacher's adds.

    It looks at BasicSR's ``ResidualBlockNoBN`` wherever it is used (EDSR, MSRResNet, a custom net), not at a family.

    Args:
        state (dict[str, Tensor]): The selected student state; changed in place.
        student_net (nn.Module): The student.
        teacher_net (nn.Module): The teacher.
        to_teacher (Callable[[str], str]): The teacher name of a student module.

    Returns:
        list[str]: The student blocks rescaled.
    """
    from basicsr.archs.arch_util import ResidualBlockNoBN

    teacher_modules = dict(teacher_net.named_modules())
    rescaled = []
    for name, block in student_net.named_modules():
        twin = teacher_modules.get(to_teacher(name))
        if not (isinstance(block, ResidualBlockNoBN) and isinstance(twin, ResidualBlockNoBN)):
            continue
        ratio = twin.res_scale / block.res_scale
        if ratio != 1:
            for key in (f'{name}.conv2.weight', f'{name}.conv2.bias'):
                state[key] = state[key] * ratio
            rescaled.append(name)
    return rescaled
