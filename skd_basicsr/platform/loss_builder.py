"""``build_loss`` for an option section, with a misspelt or misplaced option named before anything is built."""
import difflib
import inspect

from skd_basicsr.platform.errors import OptionError


def build_loss_checked(train_opt, key, device, hints=None, **given):
    """``basicsr.losses.build_loss(train_opt[key])`` on ``device`` (None when the section is absent).

    Args:
        train_opt (dict): The ``train`` section.
        key (str): The loss's section in it, e.g. ``feature_opt``.
        device (torch.device): Where the loss lives.
        hints (dict[str, str] | None): For options that belong elsewhere, the sentence that says where; added to
            the message when such an option is given. Default: None.
        **given: Options replaced by objects the model built (``feature_space`` of L_CL).

    Raises:
        OptionError: An unknown loss type, unknown options (with the closest known name), or an option the loss
            refuses (its ValueError or FileNotFoundError, prefixed with the section).
    """
    from basicsr.losses import build_loss
    from basicsr.utils.registry import LOSS_REGISTRY

    loss_opt = train_opt.get(key)
    if not loss_opt:
        return None
    loss_type = loss_opt.get('type')
    try:
        cls = LOSS_REGISTRY.get(loss_type)
    except KeyError:
        raise OptionError(f'train.{key}: no loss type {loss_type!r} in BasicSR\'s registry.') from None
    known = options_of(cls)
    unknown = sorted(set(loss_opt) - set(known) - {'type'})
    if unknown:
        close = {name: difflib.get_close_matches(name, known, n=1) for name in unknown}
        names = ', '.join(f'{n!r} (did you mean {c[0]!r}?)' if c else repr(n) for n, c in close.items())
        notes = ''.join(f' {hints[n]}' for n in unknown if hints and n in hints)
        raise OptionError(f'train.{key}: unknown option(s) {names} for {loss_type}; its options are {known}.{notes}')
    try:
        return build_loss(dict(loss_opt, **given)).to(device)
    except (ValueError, FileNotFoundError) as err:
        raise OptionError(f'train.{key}: {err}') from None


def options_of(cls):
    """The keyword options of a loss class, its base classes' included where it passes ``**kwargs`` on."""
    names = []
    for klass in cls.__mro__:
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        names += [n for n, p in params.items() if n != 'self' and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                  and n not in names]
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return names
