"""Depth mechanics of weight selection: which teacher blocks a shallower student takes.

A stage is a ``Sequential`` or ``ModuleList`` of blocks of one class. A student stage with fewer blocks takes evenly
spaced teacher blocks, the first and the last included; stages inside blocks (SwinIR's layers, each with its own
blocks) are planned outer first, so that an inner stage is looked up under the teacher block its outer one took.
"""
from dataclasses import dataclass

from torch import nn

from skd_basicsr.platform.errors import OptionError


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


def renumber(name, plan):
    """The teacher name of a student tensor or module: block indices of planned stages replaced.

    Args:
        name (str): A student tensor or module name.
        plan (dict[str, Stage]): The depth plan (:func:`plan_depth`).

    Returns:
        str: The teacher's name for it.
    """
    parts = name.split('.')
    out = list(parts)
    for i, part in enumerate(parts):
        stage = plan.get('.'.join(parts[:i]))
        if stage is not None and part.isdigit():
            out[i] = str(stage.kept[int(part)])
    return '.'.join(out)


def plan_depth(stages, teacher_state):
    """The teacher blocks of every student stage.

    Args:
        stages (dict[str, int]): {student stage: blocks} (:func:`find_stages`).
        teacher_state (dict[str, Tensor]): The teacher's state dict.

    Returns:
        dict[str, Stage]: {student stage: Stage}, outer stages first.

    Raises:
        OptionError: A stage without a counterpart in the teacher, or with more blocks than the teacher's.
    """
    plan = {}
    for name in sorted(stages, key=lambda n: n.count('.') + bool(n)):
        teacher_name = renumber(name, plan)
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


def pattern(name):
    """``name`` with every block index replaced by '#': the tensor kind, whatever block it is in."""
    return '.'.join('#' if part.isdigit() else part for part in name.split('.'))


def unused_teacher_tensors(teacher_state, used, plan, own_buffers):
    """Teacher tensors that no student tensor came from, outside the dropped blocks and the student's own buffers.

    Args:
        teacher_state (dict[str, Tensor]): The teacher's state dict.
        used (set[str]): Teacher names of the student's tensors.
        plan (dict[str, Stage]): The depth plan.
        own_buffers (tuple[str]): Last name parts of the buffers the student keeps as built.

    Returns:
        list[str]: Those teacher tensors, in state-dict order.
    """
    dropped = tuple(f'{stage.teacher}.{i}.' if stage.teacher else f'{i}.' for stage in plan.values()
                    for i in range(stage.of) if i not in stage.kept)
    return [
        key for key in teacher_state
        if key not in used and not key.startswith(dropped) and key.rpartition('.')[2] not in own_buffers
    ]
