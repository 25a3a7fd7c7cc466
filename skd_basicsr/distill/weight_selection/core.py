"""The entry point of weight selection: :func:`select_weights` and what it reports (:class:`SelectionReport`).

It finds the family rule (:mod:`.rules`) or refuses a network without one unless the plain leading slice is asked
for, refuses input channels that differ, plans the depth (:mod:`.depth`), selects every tensor
(:mod:`.layout`) and matches the constants a state dict does not hold.
"""
from dataclasses import dataclass, field

from torch import nn

from skd_basicsr.distill.weight_selection.depth import (find_stages, pattern, plan_depth, renumber,
                                                        unused_teacher_tensors)
from skd_basicsr.distill.weight_selection.layout import Pair, Unmappable, select_tensor
from skd_basicsr.distill.weight_selection.rules import GENERIC, RULES, match_residual_scales
from skd_basicsr.platform.errors import OptionError

_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)  # weight (in, out / groups, ...)


@dataclass
class SelectionReport:
    """What :func:`select_weights` did.

    Args:
        arch (str): The rule set used (a family of :data:`~.rules.RULES`, e.g. 'Restormer', or 'generic').
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
        if self.arch == GENERIC.name:
            out.append('  generic rule: the leading entries of every axis, as asked; attention heads and gated '
                       'layers, if the network has any, are not kept whole.')
        out += [f'  {name}: teacher blocks {stage.kept} of {stage.of}' for name, stage in self.stages.items()]
        if self.rescaled:
            out.append(f"  {len(self.rescaled)} residual block(s) rescaled to the teacher's residual scale "
                       f"(res_scale), e.g. {self.rescaled[:2]}")
        if self.own:
            out.append(f"  kept the student's own initialisation (no counterpart in the teacher's role): {self.own}")
        if self.unused:
            out.append(f'  {len(self.unused)} teacher tensor(s) unused, e.g. {self.unused[:3]}')
        return out


def find_rule(student_net, arch=None, generic=False):
    """The family rule for ``student_net``.

    Args:
        student_net (nn.Module): The student.
        arch (str | None): A family of :data:`~.rules.RULES`, or 'generic'; None: the student's class name.
        generic (bool): Allow the plain leading slice for a class without rules.

    Returns:
        FamilyRule: The registered rule, or :data:`~.rules.GENERIC`.

    Raises:
        OptionError: An ``arch`` that is not registered, or a class without rules when ``generic`` is False.
    """
    if arch == GENERIC.name:
        return GENERIC
    if arch is not None:
        if arch not in RULES:
            raise OptionError(f'no weight-selection rules named {arch!r}; choose one of '
                              f'{sorted(RULES) + [GENERIC.name]}.')
        return RULES[arch]
    name = type(student_net).__name__
    if name in RULES:
        return RULES[name]
    if generic:
        return GENERIC
    raise OptionError(f'no weight-selection rules for {name}: rules exist for {", ".join(sorted(RULES))}. To start '
                      'it from the plain leading slice of every teacher tensor anyway, ask for it with '
                      '`basicsr shrink --generic` or `distill.init_from_teacher: generic`; beware that it scrambles '
                      'attention heads and gated layers (the per-head parts of q, k and v, the halves of a gated '
                      'FFN), so such a student does not start from what the teacher computes.')


def input_weight(student_net, rule):
    """The weight that reads the input image, and its input-channel axis.

    Args:
        student_net (nn.Module): The student.
        rule (FamilyRule): Its rule; ``rule.input_weight`` names the weight, else the first convolution in module
            (state-dict) order is taken.

    Returns:
        tuple[str, int] | None: (weight name, axis), or None for a network without a convolution.
    """
    modules = dict(student_net.named_modules())
    if rule.input_weight is not None:
        module = modules.get(rule.input_weight.rpartition('.')[0])
        return rule.input_weight, 0 if isinstance(module, _TRANSPOSED) else 1
    for name, module in modules.items():
        if isinstance(module, _CONVOLUTIONS + _TRANSPOSED):
            return f'{name}.weight', 0 if isinstance(module, _TRANSPOSED) else 1
    return None


def _channels(count):
    return f'{count} input channel' + ('' if count == 1 else 's')


def check_input_channels(student_state, teacher_state, found):
    """Refuse a student whose input layer reads another number of channels than the teacher's.

    The input layer is in no stage or in the first block of one, which every student keeps as the teacher's first:
    its name is the same in both nets. A missing name or another number of axes is left to the selection's own
    messages.

    Args:
        student_state (dict[str, Tensor]): The student's state dict.
        teacher_state (dict[str, Tensor]): The teacher's state dict.
        found (tuple[str, int] | None): (weight name, input-channel axis) from :func:`input_weight`.

    Raises:
        OptionError: Naming the weight and both channel counts.
    """
    if found is None:
        return
    name, axis = found
    student, teacher = student_state.get(name), teacher_state.get(name)
    if student is None or teacher is None or student.dim() != teacher.dim() or student.dim() <= axis:
        return
    if student.shape[axis] != teacher.shape[axis]:
        raise OptionError(f'input channels differ: the student\'s {name} {tuple(student.shape)} reads '
                          f'{_channels(student.shape[axis])}, the teacher\'s {tuple(teacher.shape)} reads '
                          f'{_channels(teacher.shape[axis])}. Weight selection does not map one input to another '
                          '(gray against colour, dual-pixel 6 channels against 3); start this student from a teacher '
                          'with the same input, or from its own initialisation.')


def select_weights(teacher_state, student_net, arch=None, strict=False, teacher_net=None, generic=False):
    """The initial state dict of ``student_net``, selected from a larger teacher of the same family.

    Args:
        teacher_state (dict[str, Tensor]): The teacher's state dict (no ``module.`` prefixes).
        student_net (nn.Module): The student, built; its own state gives the shapes (and the buffers that depend
            only on its configuration).
        arch (str | None): Rule set: a family of :data:`~.rules.RULES` ('EDSR', 'RRDBNet', 'Restormer', 'SwinIR')
            or 'generic' (the leading slice, whatever the class). Default: None: the student's class name.
        strict (bool): Also refuse a teacher with tensors the student has no place for (outside dropped blocks),
            e.g. a dual-pixel teacher for a single-image student. Default: False (they are listed in the report).
        teacher_net (nn.Module | None): The teacher, built, when at hand: constants that are not in its state dict
            are then matched too (the residual scale of EDSR's blocks, 0.1 in EDSR-L and 1 in EDSR-M). Default: None.
        generic (bool): For a student class without rules, take the plain leading slice of every tensor instead of
            refusing (it scrambles attention heads and gated layers). A class with rules keeps them. Default: False.

    Returns:
        tuple[dict, SelectionReport]: A state dict that ``student_net.load_state_dict(..., strict=True)`` accepts,
        and what was selected.

    Raises:
        OptionError: A class without rules (``generic`` False), input channels that differ, or the first tensor or
            stage that cannot be mapped and why.
    """
    rule = find_rule(student_net, arch, generic)
    student_state = student_net.state_dict()
    check_input_channels(student_state, teacher_state, input_weight(student_net, rule))
    plan = plan_depth(find_stages(student_net), teacher_state)

    def to_teacher(name):
        return renumber(name, plan)

    from_student = [name for name in student_state if name.rpartition('.')[2] in rule.own_buffers]
    own = rule.own(student_state, teacher_state)
    from_student += [name for name in own if name not in from_student]
    state = {name: student_state[name].clone() for name in from_student}
    for name in student_state:
        if name not in state and to_teacher(name) not in teacher_state:
            raise OptionError(f'{name} has no counterpart in the teacher (looked for {to_teacher(name)}): a '
                              f'different family than {rule.name}, or mismatched names.')
    for name, tensor in student_state.items():
        if name in state:
            continue
        teacher = teacher_state[to_teacher(name)]
        try:
            layout = rule.layout(Pair(name, student_state, teacher_state, to_teacher))
            state[name] = select_tensor(teacher, tensor.shape, layout).to(tensor.dtype)
        except Unmappable as why:
            raise OptionError(f'{name} {tuple(tensor.shape)} cannot be selected from the teacher\'s '
                              f'{to_teacher(name)} {tuple(teacher.shape)}: {why}.') from None

    rescaled = match_residual_scales(state, student_net, teacher_net, to_teacher) if teacher_net is not None else []
    unused = unused_teacher_tensors(teacher_state, {to_teacher(name) for name in student_state}, plan, rule.own_buffers)
    if strict and unused:
        raise OptionError(f'{unused[0]} of the teacher has no place in the student ({len(unused)} such tensors; '
                          'strict selection refuses them).')
    parameters = dict(student_net.named_parameters())
    patterns = {pattern(name) for name in parameters}
    report = SelectionReport(arch=rule.name,
                             stages=plan,
                             filled=sum(state[name].numel() for name in parameters if name not in from_student),
                             total=sum(p.numel() for p in parameters.values()),
                             teacher_total=sum(t.numel() for key, t in teacher_state.items()
                                               if pattern(key) in patterns),
                             from_student=from_student,
                             unused=unused,
                             own=[name for name in own if name in parameters],
                             rescaled=rescaled)
    return state, report
