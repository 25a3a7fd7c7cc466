"""The ``distill`` section of an SKD option file: checked, with its defaults filled.

Shape::

    distill:
      features:                    # module pairs whose features L_GK compares (a name alone pairs it with itself)
        - {student: encoder_level1, teacher: encoder_level1, spatial_window: 8}   # a cheap spatial form per level
        - latent
      adapter: conv1x1             # or none: 1x1 convolutions where student and teacher channels differ
      init_from_teacher: false     # true: weight selection from the teacher; generic: the plain leading slice
      student_init: default        # kaiming: a random start that sees its input (skd_basicsr/distill/student_init.py)
"""
from skd_basicsr.distill.student_init import STUDENT_INITS
from skd_basicsr.platform.errors import OptionError

DISTILL_KEYS = ('features', 'adapter', 'init_from_teacher', 'student_init')
FEATURE_PAIR_KEYS = ('student', 'teacher')
SPATIAL_FORM_KEYS = ('spatial_window', 'spatial_tokens')  # optional per pair: the cheap spatial MCA form of that level
ADAPTER_TYPES = ('conv1x1', 'none')


def parse_distill_options(distill_opt, feature_opt=None):
    """Check the ``distill`` section and fill its defaults.

    Args:
        distill_opt (dict | None): The section.
        feature_opt (dict | None): ``train.feature_opt``, which needs feature pairs and may hold the spatial forms.

    Returns:
        dict: ``features`` (pairs without their spatial form), ``adapter``, ``init_from_teacher``, ``student_init``
        and ``spatial_forms`` ({option: one value per pair} for the options of ``feature_opt`` the pairs set).

    Raises:
        OptionError: Unknown keys (a typo must not fall back to a default), missing or malformed feature pairs.
    """
    distill_opt = distill_opt or {}
    if feature_opt and not distill_opt.get('features'):
        raise OptionError('train.feature_opt needs `distill: features:`, a list of {student: NAME, teacher: NAME} '
                          'module pairs, e.g. {student: encoder_level1, teacher: encoder_level1}.')
    unknown = sorted(set(distill_opt) - set(DISTILL_KEYS))
    if unknown:
        raise OptionError(f'distill: unknown option(s) {unknown}; the options are {list(DISTILL_KEYS)}.')
    adapter = distill_opt.get('adapter', 'conv1x1')
    if adapter not in ADAPTER_TYPES:
        raise OptionError(f'distill.adapter: {adapter!r} is not one of {list(ADAPTER_TYPES)}.')
    init_from_teacher = distill_opt.get('init_from_teacher', False)
    if not (isinstance(init_from_teacher, bool) or init_from_teacher == 'generic'):
        raise OptionError(f'distill.init_from_teacher must be true, false or generic (the plain leading slice for an '
                          f'architecture without a weight-selection rule), got {init_from_teacher!r}.')
    student_init = distill_opt.get('student_init', 'default')
    if student_init not in STUDENT_INITS:
        raise OptionError(f'distill.student_init: {student_init!r} is not one of {list(STUDENT_INITS)}.')
    if init_from_teacher and student_init != 'default':
        raise OptionError(f'distill.init_from_teacher and distill.student_init: {student_init} both set the '
                          'student\'s initial weights; keep one of them.')
    pairs = []
    for i, pair in enumerate(distill_opt.get('features') or []):
        if isinstance(pair, str):
            pair = {'student': pair, 'teacher': pair}
        if not isinstance(pair, dict) or not set(FEATURE_PAIR_KEYS) <= set(pair) <= set(
                FEATURE_PAIR_KEYS + SPATIAL_FORM_KEYS):
            raise OptionError(f'distill.features[{i}]: expected {{student: NAME, teacher: NAME}}, optionally with '
                              f'one of {list(SPATIAL_FORM_KEYS)}, got {pair!r}.')
        pairs.append(dict(pair))
    spatial_forms = {}
    for key in SPATIAL_FORM_KEYS:
        if any(key in pair for pair in pairs):
            if key in (feature_opt or {}):
                raise OptionError(f'{key} is set both in train.feature_opt and on distill.features pairs; set it in '
                                  'one place (on the pairs to choose it per level).')
            spatial_forms[key] = [pair.pop(key, None) for pair in pairs]
    return {'features': pairs, 'adapter': adapter, 'init_from_teacher': init_from_teacher,
            'student_init': student_init, 'spatial_forms': spatial_forms}
