"""Transforms of the training batch (``self.lq``, ``self.gt``) that any BasicSR model gets from options alone:
progressive patches (:mod:`skd_basicsr.platform.progressive`), Restormer's mixing augmentation
(:mod:`skd_basicsr.platform.mixing`) and gradient accumulation over micro-batches
(:mod:`skd_basicsr.platform.accumulation`).

How they hook in, and why this way. BasicSR's loop calls ``model.update_learning_rate(iter)`` right before
``model.feed_data(train_data)``; validation calls ``feed_data`` on its own. So when a transform is configured (and
only then), the model *instance* gets two thin wrappers when ``BaseModel.__init__`` runs: ``update_learning_rate``
records the iteration, and ``feed_data`` runs the model's own ``feed_data`` (whatever subclass defines it) and
transforms ``self.lq``/``self.gt`` only if an iteration was recorded since the previous ``feed_data``. The record
is consumed by that one call, so validation batches, test runs and any later ``feed_data`` go through untouched,
whatever their size. Instance attributes rather than a patched ``SRModel.feed_data``, because a class-level patch
is shadowed by every subclass that overrides ``feed_data`` and would act in the middle of one that extends it (and
makes ``lq`` from ``gt`` afterwards); an instance attribute wraps the model's complete ``feed_data`` for any
``BaseModel`` subclass. Models without such options are not touched at all.

Under ``train.accum_iter: N`` the training batch is first cut into N micro-batches, each transformed on its own
(its own progressive crop and mini-batch, its own mixing, as on N GPUs), and ``optimize_parameters`` is wrapped
too: it runs the model's own step once per micro-batch, as one optimizer step (:class:`MicroSteps`).
"""
import functools

from skd_basicsr.platform.accumulation import MicroSteps, mean_logs, split


def attach(model, transforms, accum_iter=1, step=None):
    """Wrap ``model.update_learning_rate`` and ``model.feed_data`` of this one instance (see the module doc), and
    ``model.optimize_parameters`` when ``accum_iter`` > 1.

    Args:
        model (BaseModel): The model, in training.
        transforms (list[callable]): ``(lq, gt, current_iter) -> (lq, gt)``, applied in order to each training
            batch (to each micro-batch under accumulation); ``gt`` may be None.
        accum_iter (int): Micro-batches per optimizer step (:mod:`skd_basicsr.platform.accumulation`). Default: 1.
        step (callable | None): ``(model, current_iter) -> None``, the step that replaced the class's
            ``optimize_parameters`` on this instance (SRModel's under ``train.amp``,
            :func:`skd_basicsr.platform.precision.sr_step`); None for the class's own. Default: None.
    """
    cls = type(model)
    pending = []  # the iteration recorded by update_learning_rate, consumed by the next feed_data
    micro_batches = []  # under accumulation: the (lq, gt) micro-batches of the current step, fed one by one

    @functools.wraps(cls.update_learning_rate)
    def update_learning_rate(current_iter, *args, **kwargs):
        cls.update_learning_rate(model, current_iter, *args, **kwargs)
        pending[:] = [current_iter]

    @functools.wraps(cls.feed_data)
    def feed_data(data, *args, **kwargs):
        cls.feed_data(model, data, *args, **kwargs)
        micro_batches.clear()
        if not pending:
            return
        current_iter = pending.pop()
        if getattr(model, 'lq', None) is None:
            raise AttributeError(f'Training-batch transforms (train.progressive, train.mixing_augs, '
                                 f'train.accum_iter) change self.lq (and self.gt) after feed_data, but '
                                 f'{cls.__name__}.feed_data did not set self.lq.')
        parts = split(model.lq, getattr(model, 'gt', None), accum_iter)
        for lq, gt in parts:
            for transform in transforms:
                lq, gt = transform(lq, gt, current_iter)
            micro_batches.append((lq, gt))
        show(*micro_batches[0])

    def show(lq, gt):
        model.lq = lq
        if gt is not None:
            model.gt = gt

    def own_step(current_iter, *args, **kwargs):
        return (step or cls.optimize_parameters)(model, current_iter, *args, **kwargs)

    @functools.wraps(cls.optimize_parameters)
    def optimize_parameters(current_iter, *args, **kwargs):
        batches = list(micro_batches)
        micro_batches.clear()
        if len(batches) < 2:  # not fed by the training loop: the model's own step on what it holds
            return own_step(current_iter, *args, **kwargs)
        steps, logs = MicroSteps(model, len(batches)), []
        for index, batch in enumerate(batches):
            show(*batch)
            model.skipped_step = False
            with steps.step(index):
                own_step(current_iter, *args, **kwargs)
            logs.append(model.log_dict)
            if model.skipped_step:  # a model that gives up this step (SKDModel's non-finite guard): all of it
                steps.zero_grad()
                break
        model.log_dict = mean_logs(logs)

    model.update_learning_rate = update_learning_rate
    model.feed_data = feed_data
    if accum_iter > 1:
        model.optimize_parameters = optimize_parameters
