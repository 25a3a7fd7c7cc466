"""Record intermediate features of a network by dotted module name, with forward hooks."""
import difflib
from collections import OrderedDict
from contextlib import contextmanager


class _StopForward(Exception):
    """Raised from a hook to end a forward pass once every wanted feature is recorded."""


class FeatureTaps:
    """Forward hooks on named submodules that record their outputs, only while :meth:`recording` is open.

    Hooks are registered once. Outside :meth:`recording` they return at once and keep nothing, so validation,
    testing and the EMA copy of a network (a different module) record nothing and hold no memory.

    Args:
        net (nn.Module): The bare network (not the DDP wrapper; hooks on the inner module fire either way).
        names (list[str]): Dotted module names, as in ``net.named_modules()``, e.g. ``encoder_level1``.
        label (str): Which network this is, for error messages. Default: 'network'.

    Raises:
        ValueError: A name that is not a module of ``net``; the message lists the closest names and the top-level
            modules.
    """

    def __init__(self, net, names, label='network'):
        modules = dict(net.named_modules())
        unknown = [name for name in names if name not in modules or name == '']
        if unknown:
            raise ValueError(describe_unknown_names(unknown, modules, label))
        self.names = list(dict.fromkeys(names))
        self.features = OrderedDict()
        self._recording = False
        self._wanted = None
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.names]

    def _hook(self, name):

        def record(module, inputs, output):
            if not self._recording:
                return
            self.features[name] = output
            if self._wanted is not None and self._wanted.issubset(self.features):
                raise _StopForward

        return record

    @contextmanager
    def recording(self):
        """Record the features of the forward passes run inside this context (the last pass wins).

        Yields the dict the features go to. On exit the taps let go of it, so the features live only as long as the
        caller keeps that dict.
        """
        self.features = OrderedDict()
        self._recording = True
        try:
            yield self.features
        finally:
            self._recording = False
            self.features = OrderedDict()

    def capture(self, net, x, names=None):
        """Run ``net(x)`` only as far as needed to record ``names``, and return those features.

        The rest of the network is skipped, e.g. the decoder when only encoder features are wanted.

        Args:
            net (nn.Module): The network these taps are registered on (or its wrapper).
            x (Tensor): Input.
            names (list[str] | None): A subset of :attr:`names`; all of them when None. Default: None.

        Returns:
            OrderedDict[str, Tensor]: The recorded features, by name.
        """
        names = self.names if names is None else list(names)
        missing = [name for name in names if name not in self.names]
        if missing:
            raise ValueError(f'{missing} are not tapped; tapped modules: {self.names}')
        self._wanted = set(names)
        try:
            with self.recording() as feats:
                try:
                    net(x)
                except _StopForward:
                    pass
        finally:
            self._wanted = None
        return OrderedDict((name, feats[name]) for name in names)

    def remove(self):
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def describe_unknown_names(unknown, modules, label):
    """An error message for module names that do not exist: the closest names and the top-level ones."""
    lines = [f'{label} has no module named {", ".join(repr(n) for n in unknown)}.']
    candidates = [name for name in modules if name]
    for name in unknown:
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        if close:
            lines.append(f'  closest to {name!r}: {", ".join(close)}')
    top = [name for name in candidates if '.' not in name]
    lines.append(f'  top-level modules of {label}: {", ".join(top)}')
    return '\n'.join(lines)
