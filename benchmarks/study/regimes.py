"""The three regimes of the distillation study (issue 21): which student learns from which teacher, and how long.

Each regime is one :class:`~skd_basicsr.tools.demo.Pair` (student, teacher, feature pairs, learning rate), the
teacher's weights, and the budget and learning rate chosen for the regime's student trained alone (``scratch``) by
a sweep (docs/kd_study.md, section 5). Every variant of a regime trains with that budget and learning rate, on the
demo's data. The cross-family CNN first needed its initialisation: with PyTorch's default one (BasicSR's
``SRVGGNetCompact`` as it is) its body starts blind to its input, and the scratch student's escape from the identity
was a lottery of the seed (30.50, 23.17 and 27.84 dB on seeds 0-2 at 2400 iterations and lr 2e-4). Initialised as
BasicSR initialises its own residual networks (:class:`benchmarks.study.archs.StudySRVGGNetCompact`) it trains on
the Restormers' 600 iterations: 29.25, 29.61 and 29.51 dB at lr 2e-4, 5e-4 and 1e-3 (seed 0); the regime takes 5e-4.
The Restormer students first kept the demo's lr 1e-3, which their own sweep (600 iterations, seed 0) showed to be low:
the width student reached 29.25, 29.61, 30.08, 30.41 and 29.44 dB at lr 5e-4, 1e-3, 2e-3, 4e-3 and 8e-3, the depth
student 29.56, 30.05, 30.48, 30.27 and 5.98 (diverged). The width regime takes 4e-3, the depth regime 2e-3; their
studies at 1e-3 stay in docs/study as a second learning rate.

* ``width``: the demo's student, 0.40x the demo teacher's parameters, cut in width only (dim 16 -> 10, the same
  depth). Weight selection hands it every teacher block.
* ``depth``: the teacher's width at a quarter of its depth, as every shipped Restormer file cuts its student (dim 48,
  [4, 6, 6, 8] + 4 -> [1, 1, 2, 2] + 2). The demo's teacher ([2, 2, 2, 2] + 1) cannot give such a student: its
  embeddings, down- and up-sampling and channel reductions alone are 0.37x its parameters, so its shallowest cut
  ([1, 1, 1, 1] + 0) is 0.68x. This regime's teacher has the official depths at the demo's width (dim 16,
  [4, 6, 6, 8] + 4), trained with the demo teacher's recipe (``--train-teacher``), and its student is the shipped
  files' cut, 0.372x. Weight selection keeps evenly spaced blocks and drops the rest.
* ``cross_family``: BasicSR's ``SRVGGNetCompact`` (the Real-ESRGAN compact network, ``upscale: 1``), 64 features and
  12 convolutions, 0.385x the demo teacher's parameters. Weight selection cannot pair the two; only distillation terms
  carry the teacher across. Its features are paired as ``basicsr distill`` pairs them
  (:func:`skd_basicsr.distill.feature_pairs.pair_features`): the student's full-resolution layers with the teacher's
  full-resolution levels at the same relative position.
"""
from collections import namedtuple
from os import path as osp

from skd_basicsr.tools.demo import CROSS_PAIR, DEMO_PAIR, TEACHER, TEACHER_WEIGHTS, Pair

HERE = osp.dirname(osp.abspath(__file__))

DEPTH_TEACHER = dict(TEACHER, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4)
DEPTH_STUDENT = dict(TEACHER, num_blocks=[1, 1, 2, 2], num_refinement_blocks=2)
DEPTH_TEACHER_WEIGHTS = osp.join(HERE, 'depth_teacher.pth')
# the demo's cross-family student (BasicSR's SRVGGNetCompact), as the study's class that initialises it to see its
# input (benchmarks/study/archs.py): with PyTorch's default initialisation the body starts blind to the input and the
# scratch student's escape from the identity is a lottery of the seed (docs/kd_study.md, section 5.1)
CNN_STUDENT = dict(CROSS_PAIR.student, type='StudySRVGGNetCompact')
# teacher level -> student layer: what pair_features finds for this pair (tests/test_kd_study.py checks it); the
# teacher's encoder_level1, decoder_level1 and refinement are the outputs of their last blocks
CNN_LAYERS = CROSS_PAIR.student_layers

# A regime: what it is, its networks (Pair, with the learning rate chosen for its scratch student), the teacher's
# weights, the iterations of every student, whether the student can start from the teacher's weights (`_init`
# variants), and the variants it trains (benchmarks/study/variants.py), scratch first.
Regime = namedtuple('Regime', 'what pair teacher_weights iters init variants')

# scratch and output-KD, then SKD's terms in the best forms found in the width study: normalised L_GK (8 x 8 windows
# at full resolution) alone, with output-KD, and warmed up; the fixed L_CL; both
_RANDOM_START = ('scratch', 'output_kd', 'gkn', 'gkn_kd', 'gkn_kd_warmup', 'clf_kd', 'skdf_kd')
_TEACHER_START = ('scratch_init', 'output_kd_init', 'gkn_kd_init', 'clf_kd_init', 'skdf_kd_init')

REGIMES = {
    'width': Regime('the demo student: the demo teacher cut in width (dim 16 -> 10), 0.40x its parameters',
                    DEMO_PAIR, TEACHER_WEIGHTS, 600, True, _RANDOM_START + _TEACHER_START),
    'depth': Regime('the teacher\'s width at a quarter of its depth ([4, 6, 6, 8] + 4 -> [1, 1, 2, 2] + 2, dim 16), '
                    '0.372x its parameters', Pair(DEPTH_STUDENT, DEPTH_TEACHER, lr=2e-3), DEPTH_TEACHER_WEIGHTS, 600,
                    True, _RANDOM_START + _TEACHER_START),
    'cross_family': Regime('SRVGGNetCompact (64 features, 12 convolutions) from the demo teacher, 0.385x its '
                           'parameters', CROSS_PAIR._replace(student=CNN_STUDENT), TEACHER_WEIGHTS, 600,
                           False, _RANDOM_START),
}


def regime_pair(regime, lr=None):
    """The regime's :class:`Pair`, at learning rate ``lr`` when given (a sweep), else the regime's own."""
    return regime.pair if lr is None else regime.pair._replace(lr=lr)
