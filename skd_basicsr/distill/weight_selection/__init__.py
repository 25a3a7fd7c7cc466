"""Weight selection: a smaller student initialised from a larger teacher of the same family.

After Xu et al., "Initializing Models with Larger Ones" (ICLR 2024). Every student tensor is a selection from the
teacher tensor of the same name:

* depth (:mod:`.depth`): a stage (a ``Sequential`` or ``ModuleList`` of blocks of one class) with fewer blocks in
  the student takes evenly spaced teacher blocks, the first and the last included;
* width (:mod:`.layout`): along every axis the student keeps the leading entries of each *group* of the teacher's
  axis. Where an axis is one undivided group (most convolutions) that is a plain leading slice; where it
  concatenates parts that other layers read separately (q, k and v of each attention head, the two halves of a
  gated FFN, the parts of a concatenated skip connection, the growth parts of a dense block), each part keeps its
  own leading entries, so that the channels a layer writes are the channels the next one reads.

A student selected this way from a teacher that is a "tiled copy" of a narrower network (each group's channels
duplicated, the weights reading the duplicates zeroed) computes exactly the narrower network: the tests check it.

Which axes are grouped how is a family's rule (:mod:`.rules`, a registry: Restormer, and BasicSR's EDSR, RRDBNet and
SwinIR). A network without rules is refused unless the plain leading slice of every axis is asked for
(``generic=True``: ``basicsr shrink --generic``, ``distill.init_from_teacher: generic``), since that slice scrambles
attention heads and gated layers. Two things a state dict does not show are handled too: a SwinIR student whose
upsampler is of another kind than the teacher's keeps its own (the names coincide, the roles do not), and, given the
teacher net, residual blocks are rescaled to the teacher's residual scale (EDSR-L's 0.1). What cannot be mapped is
refused before anything is selected (input channels that differ: gray against colour, dual-pixel against single
image) or naming the first tensor and why: a different family (names missing in the teacher), a wider student, a
student with more blocks or heads. The entry point is :func:`.core.select_weights`.
"""
from skd_basicsr.distill.weight_selection.core import SelectionReport, select_weights
from skd_basicsr.distill.weight_selection.depth import Stage, evenly_spaced, find_stages
from skd_basicsr.distill.weight_selection.rules import GENERIC, RULES, FamilyRule, register_rule

__all__ = [
    'GENERIC', 'RULES', 'FamilyRule', 'SelectionReport', 'Stage', 'evenly_spaced', 'find_stages', 'register_rule',
    'select_weights'
]
