"""The student variants of the distillation study: the demo's and the candidates beyond the paper (issues 10, 21).

Every variant trains the demo's student (:data:`skd_basicsr.tools.demo.STUDENT`) on the demo's photos; its option
file is written by :func:`skd_basicsr.tools.demo.student_options`. Candidates that need options the product does not
take run as ``StudySKDModel`` with ``StudySKDFeatureLoss`` / ``StudySKDContrastiveLoss`` (this package). A name
ending in ``_init`` starts from the teacher's selected weights.
"""
from skd_basicsr.tools.demo import DEMO_VARIANTS, FEATURE_LOSS, LEVELS, NORMALISED_FEATURE_LOSS, OUTPUT_KD, Variant

# the normalised L_GK: features divided by the teacher's RMS at each level, mean over levels and branches (the
# product's form, in the study's class for the candidates that vary it; the same loss bit for bit otherwise)
GK_NORM = dict(NORMALISED_FEATURE_LOSS, type='StudySKDFeatureLoss')
# L_CL with restored negatives and the bound
CL_RESTORED = {'type': 'StudySKDContrastiveLoss', 'loss_weight': 0.1, 'feature_space': 'teacher',
               'positive': 'teacher', 'negatives': ['lagged', 'batch'], 'bound': 'positive'}
# the fixed L_CL of issue 21: the paper's input negative (left out where it is about the positive, the product's
# negative_margin) and the lagging student (after its warm-up, lag_warmup_iter), each push capped where the teacher is
CL_FIXED = {'type': 'StudySKDContrastiveLoss', 'loss_weight': 0.1, 'feature_space': 'teacher', 'positive': 'teacher',
            'negatives': ['input', 'lagged'], 'bound': 'positive'}
# the fixed L_CL with each distance of the student to a negative floored at half the teacher output's (the product's
# negative_floor): a student that starts at its input (the cross-family CNN) no longer meets a ratio of d_pos / eps
CL_FLOORED = dict(CL_FIXED, negative_floor=0.5)
ENCODER = LEVELS[:4]
DECODER = LEVELS[4:]
STUDY = 'StudySKDModel'

CANDIDATES = {
    'gkn': Variant('normalised L_GK (teacher RMS, mean over levels and branches; windows), alpha2 = 0.1',
                   {'feature_opt': GK_NORM}, 'window', True),
    'gkn_channel_kd': Variant('gkn_kd without the spatial branch (direct and channel MCA)',
                              dict(OUTPUT_KD, feature_opt=dict(GK_NORM, branches=['direct', 'channel'])), 'window',
                              True),
    'clf_kd': Variant('the fixed L_CL (the input, where it is not about the teacher output, and the lagging student '
                      'after 100 iterations, as negatives; bounded), alpha3 = 0.1 + L1 to the teacher output',
                      dict(OUTPUT_KD, contrast_opt=CL_FIXED), None, True, model=STUDY),
    'clf_floor_kd': Variant('the fixed L_CL (as clf_kd) with each distance to a negative floored at half the teacher '
                            'output\'s (negative_floor 0.5), alpha3 = 0.1 + L1 to the teacher output',
                            dict(OUTPUT_KD, contrast_opt=CL_FLOORED), None, True, model=STUDY),
    'skdf_kd': Variant('normalised L_GK (as gkn_kd) + the fixed L_CL (as clf_kd) + L1 to the teacher output',
                       dict(OUTPUT_KD, feature_opt=GK_NORM, contrast_opt=CL_FIXED), 'window', True, model=STUDY),
    'gk': Variant('L_GK (8 levels, 3 branches, 8x8 spatial windows at full resolution), alpha2 = 0.1',
                  {'feature_opt': FEATURE_LOSS}, 'window', True),
    'gk_kd': Variant('L_GK as gk + L1 to the teacher output', dict(OUTPUT_KD, feature_opt=FEATURE_LOSS), 'window',
                     True),
    'gkn_kd': Variant('normalised L_GK (teacher RMS, mean over levels and branches; windows), alpha2 = 0.1 + L1 to '
                      'the teacher output', dict(OUTPUT_KD, feature_opt=GK_NORM), 'window', True),
    'gkn_kd_weak': Variant('gkn_kd with alpha2 = 0.02', dict(OUTPUT_KD, feature_opt=dict(GK_NORM, loss_weight=0.02)),
                           'window', True),
    'gkn_kd_exact': Variant('gkn_kd with the exact global spatial branch', dict(OUTPUT_KD, feature_opt=GK_NORM),
                            'exact', True),
    'gkn_kd_tokens': Variant('gkn_kd with the spatial branch on 256 pooled tokens at full resolution',
                             dict(OUTPUT_KD, feature_opt=GK_NORM), 'tokens', True),
    'gkn_kd_cosine': Variant('gkn_kd with cosine channel affinities',
                             dict(OUTPUT_KD, feature_opt=dict(GK_NORM, channel_affinity='cosine')), 'window', True),
    'gkn_kd_encoder': Variant('gkn_kd on the encoder levels and the latent only', dict(OUTPUT_KD, feature_opt=GK_NORM),
                              'window', True, ENCODER),
    'gkn_kd_decoder': Variant('gkn_kd on the decoder levels and the refinement only',
                              dict(OUTPUT_KD, feature_opt=GK_NORM), 'window', True, DECODER),
    'gkn_kd_warmup': Variant('gkn_kd with alpha2 warmed up over the first 10% of iterations',
                             dict(OUTPUT_KD, feature_opt=GK_NORM, distill_schedule={'warmup': 0.1}), 'window', True,
                             model=STUDY),
    'gkn_kd_decay': Variant('gkn_kd with alpha2 decayed linearly to 0 at half the iterations',
                            dict(OUTPUT_KD, feature_opt=GK_NORM, distill_schedule={'end': 0.5}), 'window', True,
                            model=STUDY),
    'cl_kd': Variant('L_CL with restored negatives (lagged student average, another image of the batch) and the '
                     'bound, alpha3 = 0.1 + L1 to the teacher output', dict(OUTPUT_KD, contrast_opt=CL_RESTORED), None,
                     True, model=STUDY),
    'cl_input_kd': Variant('L_CL with the input as negative and the bound, alpha3 = 0.1 + L1 to the teacher output',
                           dict(OUTPUT_KD, contrast_opt=dict(CL_RESTORED, negatives=['input'])), None, True,
                           model=STUDY),
    'skd_fixed': Variant('normalised L_GK (as gkn_kd) + L_CL (as cl_kd) + L1 to the teacher output',
                         dict(OUTPUT_KD, feature_opt=GK_NORM, contrast_opt=CL_RESTORED), 'window', True, model=STUDY),
    'skd_fixed_decay': Variant('skd_fixed with alpha2 and alpha3 decayed linearly to 0 at half the iterations',
                               dict(OUTPUT_KD, feature_opt=GK_NORM, contrast_opt=CL_RESTORED,
                                    distill_schedule={'end': 0.5}), 'window', True, model=STUDY),
}
CANDIDATES['skd_paper_init'] = DEMO_VARIANTS['skd_paper']._replace(
    what=f'{DEMO_VARIANTS["skd_paper"].what}; initialised from the teacher', init=True)
CANDIDATES.update({f'{name}_init': v._replace(what=f'{v.what}; initialised from the teacher', init=True)
                   for name, v in list(CANDIDATES.items())
                   if not name.endswith('_init') and f'{name}_init' not in DEMO_VARIANTS})
# name -> Variant: the demo's first (gkn_kd_warmup_init, its recommended student, among them), then the candidates
VARIANTS = dict(DEMO_VARIANTS, **CANDIDATES)
