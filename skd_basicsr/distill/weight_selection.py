"""Weight selection: a smaller student initialised from a larger teacher of the same family.

After Xu et al., "Initializing Models with Larger Ones" (ICLR 2024). Every student tensor is a selection from the
teacher tensor of the same name:

* depth: a stage (a ``Sequential`` or ``ModuleList`` of blocks of one class) with fewer blocks in the student takes
  evenly spaced teacher blocks, the first and the last included;
* width: along every axis the student keeps the leading entries of each *group* of the teacher's axis. Where an axis
  is one undivided group (most convolutions) that is a plain leading slice; where it concatenates parts that other
  layers read separately (q, k and v of each attention head, the two halves of a gated FFN, the parts of a
  concatenated skip connection, the growth parts of a dense block), each part keeps its own leading entries, so
  that the channels a layer writes are the channels the next one reads.

A student selected this way from a teacher that is a "tiled copy" of a narrower network (each group's channels
duplicated, the weights reading the duplicates zeroed) computes exactly the narrower network: the tests check it.

Per-architecture rules say which axes are grouped how (Restormer, and BasicSR's EDSR, RRDBNet and SwinIR); any
other network gets the plain leading slice on every axis. Two things a state dict does not show are handled too: a
SwinIR student whose upsampler is of another kind than the teacher's keeps its own (the names coincide, the roles do
not), and, given the teacher net, residual blocks are rescaled to the teacher's residual scale (EDSR-L's 0.1). What
cannot be mapped is refused, naming the first tensor and why: a different family (names missing in the teacher), a
wider student, a student with more blocks or heads.
"""
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from skd_basicsr.platform.errors import OptionError


class _Unmappable(Exception):
    """Why one tensor cannot be selected; :func:`select_weights` adds its name and raises OptionError."""


@dataclass
class Stage:
    """Which teacher blocks a student stage takes.

    Args:
        teacher (str): The stage's name in the teacher (outer stages already renumbered).
        kept (list[int]): Teacher block of each student block.
        of (int): Blocks in the teacher's stage.
    """
    teacher: str
    kept: list
    of: int


@dataclass
class SelectionReport:
    """What :func:`select_weights` did.

    Args:
        arch (str): The rule set used ('Restormer', 'EDSR', 'RRDBNet', 'SwinIR' or 'generic').
        stages (dict[str, Stage]): Per student stage, the teacher blocks it took.
        filled (int): Student parameter entries copied from the teacher.
        total (int): Student parameter entries.
        teacher_total (int): Teacher parameter entries (tensors named like a student parameter).
        from_student (list[str]): Buffers kept from the student itself (they depend only on its configuration), and
            the parameters a rule set leaves to the student's own initialisation (``own``).
        own (list[str]): Those parameters (SwinIR's upsampler when the two nets upsample differently).
        rescaled (list[str]): Residual blocks whose last convolution was scaled to the teacher's residual scale.
        unused (list[str]): Teacher tensors outside the dropped blocks that no student tensor came from.
    """
    arch: str
    stages: dict
    filled: int
    total: int
    teacher_total: int
    from_student: list = field(default_factory=list)
    unused: list = field(default_factory=list)
    own: list = field(default_factory=list)
    rescaled: list = field(default_factory=list)

    def lines(self):
        """A human summary: the parameter ratio and the kept blocks of each stage."""
        out = [
            f'{self.arch} student: {self.total:,} parameters, {self.total / self.teacher_total:.3f}x the '
            f"teacher's {self.teacher_total:,}; {self.filled:,} filled from the teacher."
        ]
        out += [f'  {name}: teacher blocks {stage.kept} of {stage.of}' for name, stage in self.stages.items()]
        if self.rescaled:
            out.append(f"  {len(self.rescaled)} residual block(s) rescaled to the teacher's residual scale "
                       f"(res_scale), e.g. {self.rescaled[:2]}")
        if self.own:
            out.append(f"  kept the student's own initialisation (no counterpart in the teacher's role): {self.own}")
        if self.unused:
            out.append(f'  {len(self.unused)} teacher tensor(s) unused, e.g. {self.unused[:3]}')
        return out


# --------------------------------------------------------------------------------------------------------------
# layouts: an axis is a list of parts (teacher length, student length); each part keeps its leading entries
# --------------------------------------------------------------------------------------------------------------
def _split(sizes, count):
    """``count`` equal parts of an axis whose (teacher, student) lengths are ``sizes``: a concatenation."""
    teacher, student = sizes
    return [(teacher // count, student // count)] * count


def _heads(groups, heads, widths):
    """Parts of an axis laid out as (group, head, channel), e.g. [q | k | v] each (head, channel).

    A student with fewer heads keeps the teacher's leading heads; more heads, or wider heads, cannot be mapped.

    Args:
        groups (int): Groups of heads along the axis (3 for q, k, v; 1 otherwise).
        heads (tuple[int]): (teacher, student) head counts.
        widths (tuple[int]): (teacher, student) channels of one group.
    """
    (t_heads, s_heads), (t_width, s_width) = heads, widths
    if s_heads > t_heads:
        raise _Unmappable(f'the student has {s_heads} attention heads, the teacher {t_heads}')
    t_dim, s_dim = t_width // t_heads, s_width // s_heads
    if s_dim > t_dim:
        raise _Unmappable(f'a student head has {s_dim} channels, a teacher head {t_dim} (a wider student)')
    return [(t_dim, s_dim if head < s_heads else 0) for head in range(t_heads)] * groups


def _same(sizes, why):
    """An axis that must have one length in both nets."""
    if sizes[0] != sizes[1]:
        raise _Unmappable(f'{why}: {sizes[1]} in the student, {sizes[0]} in the teacher')
    return [sizes]


def _index(parts, device):
    indices, offset = [], 0
    for teacher, student in parts:
        indices.extend(range(offset, offset + student))
        offset += teacher
    return torch.tensor(indices, dtype=torch.long, device=device)  # index_select wants the index on the tensor's device


def _select(teacher, student_shape, layout):
    """The entries of ``teacher`` that ``layout`` ({axis: parts}, leading slice elsewhere) keeps."""
    if teacher.dim() != len(student_shape):
        raise _Unmappable(f'{len(student_shape)} axes in the student, {teacher.dim()} in the teacher')
    out = teacher
    for axis, (t_len, s_len) in enumerate(zip(teacher.shape, student_shape)):
        parts = layout.get(axis) or [(t_len, s_len)]
        if any(s > t for t, s in parts):
            raise _Unmappable(f'axis {axis} is wider in the student ({s_len} entries against {t_len}, as parts '
                              f'{[s for _, s in parts]} against {[t for t, _ in parts]})')
        if sum(t for t, _ in parts) != t_len or sum(s for _, s in parts) != s_len:
            raise _Unmappable(f'axis {axis} ({s_len} from {t_len}) does not split into the parts {parts}')
        if s_len != t_len:
            out = out.index_select(axis, _index(parts, out.device))
    return out.clone()


@dataclass
class _Pair:
    """A student tensor's name, with both state dicts and the depth map, for the shapes a rule needs."""
    name: str
    student: dict
    teacher: dict
    to_teacher: Callable

    def sizes(self, student_key, axis=0):
        """(teacher, student) length of ``axis`` of the tensor ``student_key`` (a student name)."""
        return self.teacher[self.to_teacher(student_key)].shape[axis], self.student[student_key].shape[axis]


# --------------------------------------------------------------------------------------------------------------
# per-architecture width rules: pair -> {axis: parts} (leading slice on axes not named)
# --------------------------------------------------------------------------------------------------------------
def _leading_rule(pair):
    """Every axis one group. Right wherever channels pass through in order, PixelShuffle and PixelUnshuffle
    included: shuffling by r maps channels [c r^2, (c + 1) r^2) to channel c (unshuffle the reverse), so the leading
    C r^2 channels before a shuffle are exactly the leading C after it. EDSR is all of this kind (its upsampling
    convs and PixelShuffle; its RGB mean is a plain attribute, not in the state dict)."""
    return {}


_RESTORMER_STAGES = ('encoder_level1', 'encoder_level2', 'encoder_level3', 'latent', 'decoder_level3', 'decoder_level2',
                     'decoder_level1', 'refinement')
# Downsample (conv to C/2, unshuffle by 2 -> 2C) and Upsample (conv to 2C, shuffle by 2 -> C/2) keep the leading
# channels leading (see _leading_rule), so they and the encoders need no rule of their own.
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


def _restormer_rule(pair):
    parts = pair.name.split('.')
    if parts[0] in _RESTORMER_STAGES:
        return _restormer_block(pair, '.'.join(parts[:2]), '.'.join(parts[2:]))
    if pair.name in _RESTORMER_CONCATENATIONS:
        axis = _RESTORMER_CONCATENATIONS[pair.name]
        return {axis: _split(pair.sizes(pair.name, axis), 2)}
    return {}


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


def _restormer_block(pair, block, tail):
    """Width rule inside one TransformerBlock: heads in q, k, v and temperature, halves of the FFN gate."""
    return {axis: _restormer_role(pair, block, role) for axis, role in enumerate(_RESTORMER_BLOCK_AXES[tail]) if role}


def _restormer_role(pair, block, role):
    """Parts of an axis with this role in ``block``."""
    width = pair.sizes(f'{block}.attn.project_out.weight')
    if role == 'stream':
        return _split(width, 2) if block.split('.')[0] in _RESTORMER_LEVEL1_STREAM else None
    if role == 'gate':  # [gate | value]
        return _split(pair.sizes(f'{block}.ffn.project_in.weight'), 2)
    heads = pair.sizes(f'{block}.attn.temperature')
    if role == 'heads':
        return _heads(1, heads, heads)
    return _heads(3 if role == 'qkv' else 1, heads, width)  # 'qkv': [q | k | v]; 'per_head': attention output


def _rrdbnet_rule(pair):
    """conv_k of a dense block reads [features, growth_1, ..., growth_{k-1}]: each part keeps its leading channels."""
    parts = pair.name.split('.')
    if len(parts) != 5 or parts[0] != 'body' or parts[3] == 'conv1' or parts[4] != 'weight':
        return {}
    rdb = '.'.join(parts[:3])
    growth = pair.sizes(f'{rdb}.conv1.weight')
    return {1: [pair.sizes('conv_first.weight')] + [growth] * (int(parts[3][len('conv'):]) - 1)}


def _swinir_rule(pair):
    """Heads in the qkv Linear, the proj input and the relative position bias table."""
    attn, _, tail = pair.name.rpartition('.attn.')
    if pair.name == 'absolute_pos_embed':
        return {1: _same(pair.sizes(pair.name, 1), 'the number of patches (img_size) differs')}
    if tail not in ('relative_position_bias_table', 'qkv.weight', 'qkv.bias', 'proj.weight'):
        return {}
    table = f'{attn}.attn.relative_position_bias_table'
    heads = pair.sizes(table, 1)
    if tail == 'relative_position_bias_table':
        return {0: _same(pair.sizes(table), 'the window size differs'), 1: _heads(1, heads, heads)}
    width = pair.sizes(f'{attn}.attn.proj.weight')
    if tail == 'proj.weight':
        return {1: _heads(1, heads, width)}
    return {0: _heads(3, heads, width)}


RULES = {
    'Restormer': _restormer_rule,
    'EDSR': _leading_rule,
    'RRDBNet': _rrdbnet_rule,
    'SwinIR': _swinir_rule,
    'generic': _leading_rule
}
# buffers that depend only on the student's own configuration (window size, shift, input size): kept as built. A
# shallower SwinIR may put a shifted teacher block where its own block does not shift; its mask stays its own.
OWN_BUFFERS = {'SwinIR': ('relative_position_index', 'attn_mask')}


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


# tensors a rule set leaves to the student's own initialisation, decided from the two state dicts
OWN_TENSORS = {'SwinIR': _swinir_own_tensors}


# --------------------------------------------------------------------------------------------------------------
# depth
# --------------------------------------------------------------------------------------------------------------
def evenly_spaced(kept, total):
    """``kept`` indices out of ``range(total)``, evenly spaced, first and last included (just 0 when one)."""
    if kept == 1:
        return [0]
    return [(2 * i * (total - 1) + kept - 1) // (2 * (kept - 1)) for i in range(kept)]


def find_stages(net):
    """{name: blocks} of the Sequentials and ModuleLists in ``net`` whose children are blocks of one class (one
    defined outside torch.nn, so a list of plain layers is not taken for a stack of blocks)."""
    stages = {}
    for name, module in net.named_modules():
        if isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module):
            classes = {type(child) for child in module}
            block = next(iter(classes))
            if len(classes) == 1 and not block.__module__.startswith('torch.nn'):
                stages[name] = len(module)
    return stages


def _renumber(name, plan):
    """The teacher name of a student tensor or module: block indices of planned stages replaced."""
    parts = name.split('.')
    out = list(parts)
    for i, part in enumerate(parts):
        stage = plan.get('.'.join(parts[:i]))
        if stage is not None and part.isdigit():
            out[i] = str(stage.kept[int(part)])
    return '.'.join(out)


def _plan_depth(stages, teacher_state):
    """{student stage: Stage}, outer stages first so that inner ones are looked up under the teacher's block."""
    plan = {}
    for name in sorted(stages, key=lambda n: n.count('.') + bool(n)):
        teacher_name = _renumber(name, plan)
        prefix = f'{teacher_name}.' if teacher_name else ''
        blocks = {key[len(prefix):].split('.')[0] for key in teacher_state if key.startswith(prefix)}
        count = len({b for b in blocks if b.isdigit()})
        if count == 0:
            raise OptionError(f"student stage '{name}' has no counterpart in the teacher: no teacher tensor named "
                              f"'{prefix}<block>.*' (a different family, or mismatched names).")
        if stages[name] > count:
            raise OptionError(f"student stage '{name}' has {stages[name]} blocks, the teacher's '{teacher_name}' "
                              f'only {count}: a student cannot have more blocks than its teacher.')
        plan[name] = Stage(teacher_name, evenly_spaced(stages[name], count), count)
    return plan


def _pattern(name):
    return '.'.join('#' if part.isdigit() else part for part in name.split('.'))


def _unused(teacher_state, used, plan, own_buffers):
    """Teacher tensors that no student tensor came from, outside the dropped blocks and the student's own buffers."""
    dropped = tuple(f'{stage.teacher}.{i}.' if stage.teacher else f'{i}.' for stage in plan.values()
                    for i in range(stage.of) if i not in stage.kept)
    return [
        key for key in teacher_state
        if key not in used and not key.startswith(dropped) and key.rpartition('.')[2] not in own_buffers
    ]


# --------------------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------------------
def _match_residual_scales(state, student_net, teacher_net, to_teacher):
    """Residual blocks that scale their branch differently (EDSR-L: ``res_scale`` 0.1, EDSR-M: 1) get their last
    convolution scaled by teacher scale / student scale, so the selected block adds what the teacher's adds.

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


def select_weights(teacher_state, student_net, arch=None, strict=False, teacher_net=None):
    """The initial state dict of ``student_net``, selected from a larger teacher of the same family.

    Args:
        teacher_state (dict[str, Tensor]): The teacher's state dict (no ``module.`` prefixes).
        student_net (nn.Module): The student, built; its own state gives the shapes (and the buffers that depend
            only on its configuration).
        arch (str | None): Rule set: 'Restormer', 'EDSR', 'RRDBNet', 'SwinIR' or 'generic'. Default: None: the
            student's class name where it has rules, else 'generic'.
        strict (bool): Also refuse a teacher with tensors the student has no place for (outside dropped blocks),
            e.g. a dual-pixel teacher for a single-image student. Default: False (they are listed in the report).
        teacher_net (nn.Module | None): The teacher, built, when at hand: constants that are not in its state dict
            are then matched too (the residual scale of EDSR's blocks, 0.1 in EDSR-L and 1 in EDSR-M). Default: None.

    Returns:
        tuple[dict, SelectionReport]: A state dict that ``student_net.load_state_dict(..., strict=True)`` accepts,
        and what was selected.

    Raises:
        OptionError: Naming the first tensor or stage that cannot be mapped and why.
    """
    if arch is None:
        arch = type(student_net).__name__ if type(student_net).__name__ in RULES else 'generic'
    elif arch not in RULES:
        raise OptionError(f'no weight-selection rules named {arch!r}; choose one of {sorted(RULES)}.')
    rule = RULES[arch]
    student_state = student_net.state_dict()
    plan = _plan_depth(find_stages(student_net), teacher_state)

    def to_teacher(name):
        return _renumber(name, plan)

    from_student = [name for name in student_state if name.rpartition('.')[2] in OWN_BUFFERS.get(arch, ())]
    own = OWN_TENSORS.get(arch, lambda *_: [])(student_state, teacher_state)
    from_student += [name for name in own if name not in from_student]
    state = {name: student_state[name].clone() for name in from_student}
    for name in student_state:
        if name not in state and to_teacher(name) not in teacher_state:
            raise OptionError(f'{name} has no counterpart in the teacher (looked for {to_teacher(name)}): a '
                              f'different family than {arch}, or mismatched names.')
    for name, tensor in student_state.items():
        if name in state:
            continue
        teacher = teacher_state[to_teacher(name)]
        try:
            layout = rule(_Pair(name, student_state, teacher_state, to_teacher))
            state[name] = _select(teacher, tensor.shape, layout).to(tensor.dtype)
        except _Unmappable as why:
            raise OptionError(f'{name} {tuple(tensor.shape)} cannot be selected from the teacher\'s '
                              f'{to_teacher(name)} {tuple(teacher.shape)}: {why}.') from None

    rescaled = _match_residual_scales(state, student_net, teacher_net, to_teacher) if teacher_net is not None else []
    unused = _unused(teacher_state, {to_teacher(name) for name in student_state}, plan, OWN_BUFFERS.get(arch, ()))
    if strict and unused:
        raise OptionError(f'{unused[0]} of the teacher has no place in the student ({len(unused)} such tensors; '
                          'strict selection refuses them).')
    parameters = dict(student_net.named_parameters())
    patterns = {_pattern(name) for name in parameters}
    report = SelectionReport(arch=arch,
                             stages=plan,
                             filled=sum(state[name].numel() for name in parameters if name not in from_student),
                             total=sum(p.numel() for p in parameters.values()),
                             teacher_total=sum(t.numel() for key, t in teacher_state.items()
                                               if _pattern(key) in patterns),
                             from_student=from_student,
                             unused=unused,
                             own=[name for name in own if name in parameters],
                             rescaled=rescaled)
    return state, report
