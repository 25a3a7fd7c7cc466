"""Width mechanics of weight selection: axis layouts and the selection of one tensor.

A layout says, for the axes of one tensor, which teacher entries the student keeps: ``{axis: parts}``, where
``parts`` is a list of (teacher length, student length) and each part keeps its own leading entries. An axis that is
not named is one part (a plain leading slice). The family rules (:mod:`.rules`) build layouts with :func:`split`,
:func:`heads` and :func:`same`; :func:`select_tensor` applies one.
"""
from dataclasses import dataclass
from typing import Callable

import torch


class Unmappable(Exception):
    """Why one tensor cannot be selected; :func:`~.core.select_weights` adds its name and raises OptionError."""


def split(sizes, count):
    """``count`` equal parts of an axis whose (teacher, student) lengths are ``sizes``: a concatenation.

    Args:
        sizes (tuple[int]): (teacher, student) length of the axis.
        count (int): Parts concatenated along it.

    Returns:
        list[tuple[int]]: The parts.
    """
    teacher, student = sizes
    return [(teacher // count, student // count)] * count


def heads(groups, head_counts, widths):
    """Parts of an axis laid out as (group, head, channel), e.g. [q | k | v] each (head, channel).

    A student with fewer heads keeps the teacher's leading heads; more heads, or wider heads, cannot be mapped.

    Args:
        groups (int): Groups of heads along the axis (3 for q, k, v; 1 otherwise).
        head_counts (tuple[int]): (teacher, student) head counts.
        widths (tuple[int]): (teacher, student) channels of one group.

    Returns:
        list[tuple[int]]: The parts, one per head of each group (0 student entries for a dropped head).

    Raises:
        Unmappable: A student with more heads, or wider heads, than the teacher.
    """
    (t_heads, s_heads), (t_width, s_width) = head_counts, widths
    if s_heads > t_heads:
        raise Unmappable(f'the student has {s_heads} attention heads, the teacher {t_heads}')
    t_dim, s_dim = t_width // t_heads, s_width // s_heads
    if s_dim > t_dim:
        raise Unmappable(f'a student head has {s_dim} channels, a teacher head {t_dim} (a wider student)')
    return [(t_dim, s_dim if head < s_heads else 0) for head in range(t_heads)] * groups


def same(sizes, why):
    """An axis that must have one length in both nets.

    Args:
        sizes (tuple[int]): (teacher, student) length of the axis.
        why (str): What a difference means, for the message.

    Returns:
        list[tuple[int]]: The axis as one part.

    Raises:
        Unmappable: The lengths differ.
    """
    if sizes[0] != sizes[1]:
        raise Unmappable(f'{why}: {sizes[1]} in the student, {sizes[0]} in the teacher')
    return [sizes]


def _index(parts, device):
    indices, offset = [], 0
    for teacher, student in parts:
        indices.extend(range(offset, offset + student))
        offset += teacher
    return torch.tensor(indices, dtype=torch.long, device=device)  # index_select wants the index on the tensor's device


def select_tensor(teacher, student_shape, layout):
    """The entries of ``teacher`` that ``layout`` keeps.

    Args:
        teacher (Tensor): The teacher tensor.
        student_shape (torch.Size): The shape of the student tensor it initialises.
        layout (dict[int, list | None]): {axis: parts}; a leading slice on axes not named (or named with None).

    Returns:
        Tensor: A new tensor of ``student_shape``.

    Raises:
        Unmappable: Another number of axes, a wider student axis, or parts that do not add up to the axis.
    """
    if teacher.dim() != len(student_shape):
        raise Unmappable(f'{len(student_shape)} axes in the student, {teacher.dim()} in the teacher')
    out = teacher
    for axis, (t_len, s_len) in enumerate(zip(teacher.shape, student_shape)):
        parts = layout.get(axis) or [(t_len, s_len)]
        if any(s > t for t, s in parts):
            raise Unmappable(f'axis {axis} is wider in the student ({s_len} entries against {t_len}, as parts '
                             f'{[s for _, s in parts]} against {[t for t, _ in parts]})')
        if sum(t for t, _ in parts) != t_len or sum(s for _, s in parts) != s_len:
            raise Unmappable(f'axis {axis} ({s_len} from {t_len}) does not split into the parts {parts}')
        if s_len != t_len:
            out = out.index_select(axis, _index(parts, out.device))
    return out.clone()


@dataclass
class Pair:
    """A student tensor's name, with both state dicts and the depth map, for the shapes a rule needs.

    Args:
        name (str): The student tensor a layout is asked for.
        student (dict[str, Tensor]): The student's state dict.
        teacher (dict[str, Tensor]): The teacher's state dict.
        to_teacher (Callable[[str], str]): The teacher name of a student name (block indices renumbered).
    """
    name: str
    student: dict
    teacher: dict
    to_teacher: Callable

    def sizes(self, student_key, axis=0):
        """(teacher, student) length of ``axis`` of the tensor ``student_key`` (a student name)."""
        return self.teacher[self.to_teacher(student_key)].shape[axis], self.student[student_key].shape[axis]
