"""Which student features to compare with which teacher features, found on a probe forward of both networks.

A network's candidate features are the outputs of its blocks: the children of every top-level ``Sequential`` or
``ModuleList`` (a stage; not an upsampler), in the order the forward runs them. A block whose output is not one
(B, C, H, W) map (a Swin block returns tokens) is represented by its last child that outputs one (the RSTB's
``conv``). A block with no more channels than the network's output is its output head (``SRVGGNetCompact``'s last
convolution, inside ``body``): an image, not a representation, so it is never a candidate.

* **Same family** (:func:`pair_features`, the stages share their names): every stage's output is paired (the last
  student block with the last teacher block), and student block j of a stage of m blocks with the teacher block that
  ends the same fraction of the teacher's n blocks, ``ceil((j + 1) n / m) - 1``. Stage outputs come first; interior
  blocks are added, evenly spaced, until there are :data:`MIN_PAIRS` pairs; at most :data:`MAX_PAIRS` are kept,
  evenly spaced along the forward.
* **Another family**: the teacher's modules are chosen as above; each is paired with the student block at the same
  resolution whose relative position in the student's forward (among its blocks of that resolution) is closest.
  Teacher modules at a resolution the student does not have are left out.

Every pair has equal spatial sizes on the probe; the adapters of SKDModel map the channels where they differ.
"""
import math

import torch
from torch import nn

MIN_PAIRS = 4
MAX_PAIRS = 8


def _evenly(items, count):
    """``count`` items of ``items`` evenly spaced, the first and the last included (all when there are fewer)."""
    if len(items) <= count:
        return list(items)
    if count == 1:
        return [items[-1]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def stages(net):
    """{stage name: [block names]} of the top-level ``Sequential`` / ``ModuleList`` children, in definition order;
    upsamplers (a stage with a ``PixelShuffle``) are not stages of features."""
    return {name: [f'{name}.{child}' for child, _ in module.named_children()]
            for name, module in net.named_children()
            if isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module) > 0
            and not any(isinstance(m, nn.PixelShuffle) for m in module.modules())}


def probe_shapes(net, probe):
    """{module name: output shape} of every module whose output is one 4-D tensor, in the order the forward ran
    them (first call); the network's own output under ``''``, last."""
    shapes, handles = {}, []
    for name, module in net.named_modules():

        def record(module, inputs, output, name=name):
            if torch.is_tensor(output) and output.dim() == 4 and name not in shapes:
                shapes[name] = tuple(output.shape)

        handles.append(module.register_forward_hook(record))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(probe)
    finally:
        net.train(was_training)
        for handle in handles:
            handle.remove()
    if '' in shapes:
        shapes[''] = shapes.pop('')
    return shapes


def block_features(net, shapes, size):
    """{stage: [(block, feature module name)]}: each block's 4-D output, or that of its last child with one; blocks
    beyond the input's ``size`` (an upsampler's) and output heads (no more channels than the network's output) are
    left out."""
    out_channels = shapes[''][1] if '' in shapes else 0
    found = {}
    for stage, blocks in stages(net).items():
        entries = []
        for block in blocks:
            depth = block.count('.') + 1
            inner = [name for name in shapes if name.startswith(f'{block}.') and name.count('.') == depth]
            name = block if block in shapes else (inner[-1] if inner else None)
            if name and all(a <= b for a, b in zip(shapes[name][-2:], size)) and shapes[name][1] > out_channels:
                entries.append((block, name))
        if entries:
            found[stage] = entries
    return found


def _same_family_plan(student_blocks, teacher_blocks):
    """(student feature, teacher feature) per student block: the teacher block ending the same fraction of depth."""
    m, n = len(student_blocks), len(teacher_blocks)
    return [(student_blocks[j][1], teacher_blocks[math.ceil((j + 1) * n / m) - 1][1]) for j in range(m)]


def _select(per_stage):
    """Stage outputs first, interior pairs evenly spaced up to MIN_PAIRS, at most MAX_PAIRS, in forward order."""
    order = [pair for pairs in per_stage for pair in pairs]
    chosen = {pairs[-1] for pairs in per_stage}
    longest = max(per_stage, key=len)
    for k in range(1, MIN_PAIRS):  # the blocks that end each quarter of the longest stage
        if len(chosen) >= MIN_PAIRS:
            break
        chosen.add(longest[max(0, round(k * len(longest) / MIN_PAIRS) - 1)])
    ordered = [pair for pair in order if pair in chosen]
    return _evenly(ordered, MAX_PAIRS)


def pair_features(student, teacher, probe, with_sizes=False):
    """The feature pairs of ``student`` and ``teacher`` (see the module's docstring).

    Args:
        student (nn.Module): The student network.
        teacher (nn.Module): The teacher network.
        probe (Tensor): An input both networks take (:meth:`NetworkSpec.probe`).
        with_sizes (bool): Return each pair with its (h, w) on the probe. Default: False.

    Returns:
        list[dict] | list[tuple[dict, tuple]]: ``{'student': NAME, 'teacher': NAME}`` in forward order, as
        ``distill.features`` takes them (with their sizes when asked).

    Raises:
        ValueError: When no pair of equal spatial size exists.
    """
    shapes_s, shapes_t = probe_shapes(student, probe), probe_shapes(teacher, probe)
    size = probe.shape[-2:]
    blocks_s, blocks_t = block_features(student, shapes_s, size), block_features(teacher, shapes_t, size)
    shared = [stage for stage in blocks_t if stage in blocks_s and len(blocks_s[stage]) <= len(blocks_t[stage])]
    if shared and type(student) is type(teacher):
        per_stage = []
        for stage in shared:
            plan = [(s, t) for s, t in _same_family_plan(blocks_s[stage], blocks_t[stage])
                    if shapes_s[s][-2:] == shapes_t[t][-2:]]
            if plan:
                per_stage.append(plan)
        pairs = _select(per_stage) if per_stage else []
    else:
        pairs = _cross_family(blocks_s, blocks_t, shapes_s, shapes_t)
    if not pairs:
        raise ValueError(f'no block of {type(student).__name__} has the spatial size of a block of '
                         f'{type(teacher).__name__} on a {tuple(probe.shape[-2:])} input; name the pairs yourself in '
                         '`distill.features`.')
    found = [{'student': s, 'teacher': t} for s, t in pairs]
    return [(pair, shapes_t[pair['teacher']][-2:]) for pair in found] if with_sizes else found


def _cross_family(blocks_s, blocks_t, shapes_s, shapes_t):
    teacher_modules = _select([[(t, t) for _, t in blocks] for blocks in blocks_t.values()])
    student_modules = [name for blocks in blocks_s.values() for _, name in blocks]
    pairs, used = [], set()
    for _, t in teacher_modules:
        size = shapes_t[t][-2:]
        at_size_t = [name for blocks in blocks_t.values() for _, name in blocks if shapes_t[name][-2:] == size]
        at_size_s = [name for name in student_modules if shapes_s[name][-2:] == size]
        if not at_size_s:
            continue
        where = at_size_t.index(t) / max(len(at_size_t) - 1, 1)
        s = min(at_size_s, key=lambda name: abs(at_size_s.index(name) / max(len(at_size_s) - 1, 1) - where))
        if s not in used:
            used.add(s)
            pairs.append((s, t))
    return pairs
