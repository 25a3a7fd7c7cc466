"""Record intermediate features of a network by dotted module name, with forward hooks.

A recorded output is the module's own tensor, not a copy, unless the network later changes it in place: BasicSR's
RRDBNet runs ``LeakyReLU(inplace=True)`` on the output of ``conv1``, so a plain reference to that output would end
as the activation, not the convolution. The rule, exact and cheap: every tensor carries a version counter that each
in-place op on it (or on a view of it) increments. The hook notes the version; when the forward is over the taps
compare. A tap whose output changed is copied (``clone``) by its hook from then on, and only that tap; a network's
in-place ops are fixed by its code, so one forward finds them all (:meth:`FeatureTaps.find_inplace`, which SKDModel
runs in its shape probe). A change found in a later recording raises :class:`FeatureChangedInPlace` rather than
hand over a wrong feature. Tensors made under ``torch.inference_mode()`` have no version counter, so there only the
taps already found are copied.

Under ``torch.compile`` (``train.compile``) the hooks are traced into the compiled graph: dynamo cannot trace the
version check nor a hook that ends the forward, so there a hook only records (a copy where the eager probe found an
in-place change: SKDModel runs it before it compiles), and :meth:`FeatureTaps.capture` runs the whole forward. The
graph is compiled once while recording and once while not; the features are those of the eager network (tested).
"""
import difflib
from collections import OrderedDict
from contextlib import contextmanager

import torch


class _StopForward(Exception):
    """Raised from a hook to end a forward pass once every wanted feature is recorded."""


class FeatureChangedInPlace(RuntimeError):
    """A recorded feature was changed by a later in-place op of the forward pass; its taps now copy it."""


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
        self.copied = set()  # taps whose output a later in-place op changes: their hook records a copy
        self._versions = {}
        self._recording = False
        self._wanted = None
        for name in self.names:  # registered for the network's lifetime, like the taps
            modules[name].register_forward_hook(self._hook(name))

    def _hook(self, name):

        def record(module, inputs, output):
            if not self._recording:
                return
            if torch.compiler.is_compiling():
                self.features[name] = output.clone() if name in self.copied else output
                return
            if name in self.copied:
                output = output.clone()
            elif torch.is_tensor(output) and not output.is_inference():
                self._versions[name] = output._version
            self.features[name] = output
            if self._wanted is not None and self._wanted.issubset(self.features):
                raise _StopForward

        return record

    def _check_unchanged(self):
        changed = [name for name, version in self._versions.items() if self.features[name]._version != version]
        if changed:
            self.copied.update(changed)
            raise FeatureChangedInPlace(
                f'the output of {", ".join(changed)} was changed in place later in the forward pass (an inplace '
                'activation, +=), so what was recorded is not that module\'s output. These taps copy it from now '
                'on; run the forward again (FeatureTaps.find_inplace does both at start-up).')

    @contextmanager
    def recording(self):
        """Record the features of the forward passes run inside this context (the last pass wins).

        Yields the dict the features go to. On exit the taps let go of it, so the features live only as long as the
        caller keeps that dict.
        """
        self.features = OrderedDict()
        self._versions = {}
        self._recording = True
        try:
            yield self.features
            self._check_unchanged()
        finally:
            self._recording = False
            self.features = OrderedDict()
            self._versions = {}

    def find_inplace(self, net, x):
        """Run ``net(x)`` with every tap recording, and from then on copy the taps whose output a later in-place op
        changes.

        Args:
            net (nn.Module): The network these taps are registered on (or its wrapper).
            x (Tensor): An input, e.g. a zero probe.

        Returns:
            tuple[Tensor, OrderedDict[str, Tensor]]: The output and the features of a correct forward.
        """
        try:
            with self.recording() as feats:
                out = net(x)
        except FeatureChangedInPlace:
            with self.recording() as feats:
                out = net(x)
        return out, feats

    def capture(self, net, x, names):
        """Run ``net(x)`` only as far as needed to record ``names``, and return those features.

        The rest of the network is skipped, e.g. the decoder when only encoder features are wanted.

        Args:
            net (nn.Module): The network these taps are registered on (or its wrapper).
            x (Tensor): Input.
            names (list[str]): A subset of :attr:`names`.

        Returns:
            OrderedDict[str, Tensor]: The recorded features, by name.
        """
        names = list(names)
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
