"""A student for a teacher, chosen for the cost the user can pay: a search over width and depth of the teacher's family.

Each family with a search space (:data:`SPACES`, one registered entry per family, the families weight selection has
rules for) turns the teacher's options into candidate students: the width scaled by each of :data:`WIDTHS`, the depth
(blocks per stage) by each of :data:`DEPTHS`, with what the family needs kept whole (the heads of an attention layer,
the channel multiple of a pixel-unshuffle). Every candidate is measured against the teacher (:func:`measure`) and
the rule of :func:`choose` picks one:

* ``params`` or ``macs`` target R: of the candidates whose ratio to the teacher is at most R, the one with the most
  parameters (the most capacity the target allows);
* ``latency`` target R: the candidates whose MACs ratio is at most R are timed against the teacher, alternately, in
  order of decreasing parameters; the first whose latency ratio is at most R is chosen (so the most parameters among
  those timed within the target). A student's latency ratio is rarely below its MACs ratio, which is why only those
  are timed.
"""
from dataclasses import dataclass, field

from skd_basicsr.platform.cost import count_params
from skd_basicsr.platform.errors import OptionError
from skd_basicsr.platform.network_spec import arch_defaults

WIDTHS = (1, 7 / 8, 3 / 4, 5 / 8, 1 / 2, 3 / 8, 1 / 4)
DEPTHS = (1, 3 / 4, 1 / 2, 1 / 4)
TARGETS = ('params', 'macs', 'latency')
SPACES = {}
# the options that set a family's depth (blocks per stage); the rest of a cut is width
DEPTH_KEYS = {'Restormer': ('num_blocks', 'num_refinement_blocks'), 'EDSR': ('num_block',),
              'RRDBNet': ('num_block',), 'SwinIR': ('depths',)}


def register_space(family):
    """Register ``fn(teacher_options) -> iterable of student options`` as the search space of ``family``."""

    def register(fn):
        if family in SPACES:
            raise ValueError(f'a search space for {family} is registered already')
        SPACES[family] = fn
        return fn

    return register


def keeps_depth(student, teacher):
    """Whether the student has the teacher's depth (a cut in width only): True or False for two networks of one
    family in :data:`DEPTH_KEYS`, None otherwise (the depth of other families is not known here)."""
    family = teacher.get('type')
    if student.get('type') != family or family not in DEPTH_KEYS:
        return None
    s, t = _defaults(student), _defaults(teacher)
    return all(_as_list(s.get(key)) == _as_list(t.get(key)) for key in DEPTH_KEYS[family])


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _scaled(value, factor, multiple=1):
    """``value * factor`` rounded to a multiple of ``multiple``, at least ``multiple``."""
    return max(multiple, int(round(value * factor / multiple)) * multiple)


def _defaults(net_opt):
    """The teacher's options completed with its architecture's defaults."""
    return dict(arch_defaults(net_opt['type']), **net_opt)


@register_space('Restormer')
def _restormer(teacher):
    t = _defaults(teacher)
    heads = list(t['heads'])
    for width in WIDTHS:
        dim = _scaled(t['dim'], width, 2)  # the pixel-unshuffle downsampling halves dim before it doubles
        if any((dim * 2**level) % h for level, h in enumerate(heads)):
            continue
        for depth in DEPTHS:
            yield dict(teacher, dim=dim, num_blocks=[_scaled(b, depth) for b in t['num_blocks']],
                       num_refinement_blocks=_scaled(t['num_refinement_blocks'], depth))


@register_space('EDSR')
def _edsr(teacher):
    t = _defaults(teacher)
    for width in WIDTHS:
        for depth in DEPTHS:
            yield dict(teacher, num_feat=_scaled(t['num_feat'], width, 4), num_block=_scaled(t['num_block'], depth))


@register_space('RRDBNet')
def _rrdbnet(teacher):
    t = _defaults(teacher)
    for width in WIDTHS:
        for depth in DEPTHS:
            yield dict(teacher, num_feat=_scaled(t['num_feat'], width, 4),
                       num_grow_ch=_scaled(t['num_grow_ch'], width, 4), num_block=_scaled(t['num_block'], depth))


@register_space('SwinIR')
def _swinir(teacher):
    import math

    t = _defaults(teacher)
    depths, heads = list(t['depths']), list(t['num_heads'])
    for width in WIDTHS:
        embed_dim = _scaled(t['embed_dim'], width, math.lcm(*heads))  # every layer splits it into its heads
        for depth in DEPTHS:
            layers = _scaled(len(depths), depth)  # fewer residual Swin blocks, each as deep as the teacher's
            yield dict(teacher, embed_dim=embed_dim, depths=depths[:layers], num_heads=heads[:layers])


@dataclass
class Candidate:
    """A student and what it costs against the teacher (ratios; None where not measured)."""
    options: dict
    params: int
    ratios: dict = field(default_factory=dict)

    def describe(self, teacher):
        """The options in which it differs from the teacher, e.g. ``dim 24, num_blocks [2, 3, 3, 4]``."""
        changed = [f'{k} {v}' for k, v in self.options.items() if teacher.get(k) != v]
        return ', '.join(changed) or 'the teacher itself'


def candidates(teacher):
    """The distinct candidate students of the teacher's family, smaller than the teacher, with their parameters.

    Raises:
        OptionError: The teacher's family has no search space.
    """
    from basicsr.archs import build_network

    family = teacher.get('type')
    if family not in SPACES:
        raise OptionError(f'no student search for {family}: the families with one are {", ".join(sorted(SPACES))}. '
                          'Give the student yourself with --student FILE (any BasicSR network).')
    teacher_params = count_params(build_network(dict(teacher)))
    seen, found = [], []
    for options in SPACES[family](teacher):
        if options in seen:
            continue
        seen.append(options)
        params = count_params(build_network(dict(options)))
        if params < teacher_params:
            found.append(Candidate(options, params, {'params': params / teacher_params}))
    return sorted(found, key=lambda c: -c.params)


def measure(candidates, teacher, what, size=(256, 256), repeats=3, budget=None):
    """Fill ``ratios['macs']`` (thop at the probe size) and, for ``what == 'latency'``, ``ratios['latency']``.

    Args:
        candidates (list[Candidate]): From :func:`candidates`, most parameters first.
        teacher (dict): The teacher's options.
        what (str): The target, one of :data:`TARGETS`.
        size (tuple[int, int]): Input size of the latency. Default: (256, 256).
        repeats (int): Timed forwards of each network (medians). Default: 3.
        budget (float | None): The latency target: only candidates within it by MACs are timed, in order, until one
            is within it by latency. Default: None.
    """
    import torch
    from basicsr.archs import build_network

    from skd_basicsr.platform.cost import alternating_latency_ms, thop_macs
    from skd_basicsr.platform.network_spec import NetworkSpec

    if what == 'params':
        return
    spec = NetworkSpec.from_options(teacher, 'network_t')
    teacher_net = build_network(dict(teacher)).eval()
    probe = spec.probe()
    teacher_macs = thop_macs(teacher_net, probe)
    for candidate in candidates:
        candidate.ratios['macs'] = thop_macs(build_network(dict(candidate.options)).eval(), probe) / teacher_macs
    if what != 'latency':
        return
    h, w = (-(-side // spec.size_multiple) * spec.size_multiple for side in size)
    x = torch.rand(1, spec.in_channels, h, w)
    for candidate in candidates:
        if candidate.ratios['macs'] > budget:
            continue
        student_ms, teacher_ms = alternating_latency_ms([build_network(dict(candidate.options)).eval(), teacher_net],
                                                        x, repeats)
        candidate.ratios['latency'] = student_ms / teacher_ms
        if candidate.ratios['latency'] <= budget:
            return


def choose(candidates, what, target):
    """The candidate the rule of this module picks for ``what`` <= ``target``.

    Raises:
        OptionError: No candidate meets the target; the message lists the closest ones.
    """
    within = [c for c in candidates if c.ratios.get(what) is not None and c.ratios[what] <= target]
    if within:
        return max(within, key=lambda c: (c.params, -c.ratios[what]))
    measured = sorted((c for c in candidates if c.ratios.get(what) is not None), key=lambda c: c.ratios[what])
    closest = '; '.join(f'{c.ratios[what]:.3f}x ({c.params:,} parameters)' for c in measured[:3])
    raise OptionError(f'no student of the search meets --{what} {target}: the closest are {closest or "none"}. '
                      f'Raise the target, or give the student yourself with --student FILE.')
