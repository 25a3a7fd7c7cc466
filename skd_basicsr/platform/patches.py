"""Every change skd_basicsr makes to BasicSR's classes and functions, in one list, each with why.

Importing ``skd_basicsr`` calls :func:`apply` once (later calls do nothing), before its own modules register
themselves. The changes reach every BasicSR model, not only SKDModel: SRModel and BasicSR's other models save,
load, optimise and schedule through them too. The replacements live in the module named for their job:
:mod:`skd_basicsr.platform.compat` (shims for the installed libraries), :mod:`skd_basicsr.platform.options`,
:mod:`skd_basicsr.platform.checkpoint`, :mod:`skd_basicsr.platform.optim`, :mod:`skd_basicsr.platform.lr_scheduler`,
:mod:`skd_basicsr.platform.training_batch` (progressive patches and mixing augmentation),
:mod:`skd_basicsr.platform.padded_test` (validation at any input size),
:mod:`skd_basicsr.platform.accumulation` (gradient accumulation), :mod:`skd_basicsr.platform.precision` (mixed
precision, channels_last, torch.compile, TF32), :mod:`skd_basicsr.platform.exact_resume`,
:mod:`skd_basicsr.platform.data.preflight`. It knows nothing of distillation: the distillation declares its frozen
teacher to the resume rule (:func:`skd_basicsr.platform.checkpoint.freeze_on_resume`).
"""
import functools

from skd_basicsr.platform import compat

_APPLIED = []


def checking_training_options(init):
    """``BaseModel.__init__`` that checks ``val.amp`` and attaches it, and, in training, checks the clipping and
    skipping options, attaches the training precision (``train.amp``, ``channels_last``, ``compile``, ``tf32``),
    records the iteration of each ``optimize_parameters`` call and attaches the training-batch transforms
    (progressive patches, mixing augmentation) and gradient accumulation.

    ``BaseModel.__init__`` runs before a model builds its networks, so a wrong option fails at once; the device is
    known there (``self.device``), so an option it cannot honour fails at once too.
    """
    from skd_basicsr.platform import precision, training_batch
    from skd_basicsr.platform.accumulation import accum_iter
    from skd_basicsr.platform.mixing import MixingAugment
    from skd_basicsr.platform.nonfinite import max_skipped_steps
    from skd_basicsr.platform.optim import grad_clip_norm
    from skd_basicsr.platform.progressive import ProgressivePatches

    @functools.wraps(init)
    def __init__(self, opt, *args, **kwargs):
        init(self, opt, *args, **kwargs)
        precision.attach_validation(self)
        if self.is_train:
            grad_clip_norm(opt.get('train') or {})
            max_skipped_steps(opt.get('train') or {})
            step = precision.attach_training(self)
            recording_iteration(self)
            # cropped first, then mixed, as in Restormer's training loop
            transforms = [t for t in (ProgressivePatches.from_options(opt), MixingAugment.from_options(opt)) if t]
            count = accum_iter(opt.get('train'))
            if transforms or count > 1:
                training_batch.attach(self, transforms, count, step)

    return __init__


def recording_iteration(model):
    """Make ``model.optimize_parameters(current_iter)`` keep ``model.current_iter``: the iteration that the checks
    inside an optimizer step name in their messages."""
    optimize = model.optimize_parameters

    @functools.wraps(optimize)
    def optimize_parameters(current_iter, *args, **kwargs):
        model.current_iter = current_iter
        model.skipped_step = False  # set by a guard that skips this iteration's step
        return optimize(current_iter, *args, **kwargs)

    model.optimize_parameters = optimize_parameters


def skipping_ema_of_skipped_steps(model_ema):
    """``BaseModel.model_ema`` that does nothing after a step the non-finite guard skipped: a skipped step moves no
    weight, the EMA's included."""

    @functools.wraps(model_ema)
    def model_ema_(self, *args, **kwargs):
        if getattr(self, 'skipped_step', False):
            return None
        return model_ema(self, *args, **kwargs)

    return model_ema_


def changes():
    """The changes, as (owner, attribute, replacement, why); ``owner`` is a BasicSR module or class."""
    compat.alias_functional_tensor()  # before anything imports basicsr, which needs it
    (vgg_arch, base_model, sr_model, bsr_test, bsr_train, dist_util, file_client, bsr_options, paired, sampler, fetch,
     bsr_data) = compat.import_basicsr_quietly(
         'basicsr.archs.vgg_arch', 'basicsr.models.base_model', 'basicsr.models.sr_model', 'basicsr.test',
         'basicsr.train', 'basicsr.utils.dist_util', 'basicsr.utils.file_client', 'basicsr.utils.options',
         'basicsr.data.paired_image_dataset', 'basicsr.data.data_sampler', 'basicsr.data.prefetch_dataloader',
         'basicsr.data')
    from skd_basicsr.platform import options
    from skd_basicsr.platform.data import preflight
    from skd_basicsr.platform import accumulation, checkpoint, exact_resume, lr_scheduler, optim, padded_test

    model = base_model.BaseModel
    dataset = paired.PairedImageDataset
    return [
        (vgg_arch, 'vgg', compat.VGGFactory(vgg_arch.vgg),
         'torchvision deprecates `pretrained=`, and weights must never be downloaded at run time'),
        (bsr_options, 'ordered_yaml', options.ordered_yaml,
         'option files are plain data: a !!python tag must not run code'),
        (bsr_train, 'parse_options', options.parse_options,
         '--force_yml without exec, option errors named in one line before anything runs'),
        (bsr_test, 'parse_options', options.parse_options, 'the same for testing'),
        (dist_util, 'init_dist', compat.init_dist, 'NCCL and torch.cuda.set_device are hard-coded; gloo on CPU'),
        (bsr_options, 'init_dist', compat.init_dist, 'parse_options calls it by this name'),
        (model, 'model_to_device', compat.model_to_device, 'DDP is given a CUDA device id even on CPU'),
        (file_client.LmdbBackend, '__init__', compat.lmdb_backend_init,
         'lmdb 3 refuses to open one path twice in a process (training and validation on one LMDB)'),
        (bsr_train, 'load_resume_state', checkpoint.load_resume_state,
         'it loads onto CUDA, unpickles code, may pick a truncated state, and points the frozen teacher at a '
         'checkpoint that is never written'),
        (model, 'save_network', checkpoint.save_network,
         'written in place, a kill leaves a truncated file; NaN weights would replace good ones'),
        (model, 'get_training_state', checkpoint.get_training_state,
         'one place for what a state holds, which models extend (SKDModel: adapters)'),
        (model, 'save_training_state', checkpoint.save_training_state,
         'written in place, a kill leaves a truncated state that --auto_resume picks up'),
        (model, 'load_network', checkpoint.load_network, 'a plain torch.load unpickles code'),
        (model, 'model_ema', skipping_ema_of_skipped_steps(model.model_ema),
         'SRModel updates the EMA after every call of the step, also one the non-finite guard skipped'),
        (model, 'resume_training', exact_resume.resuming_position(model.resume_training),
         'BasicSR restarts the interrupted epoch from its first batch with fresh random states: another run'),
        (model, 'validation', exact_resume.keeping_random_state(model.validation),
         'validation must not change the training\'s random draws (a resumed run validates at other iterations)'),
        (fetch.CPUPrefetcher, 'next', exact_resume.counting_next(fetch.CPUPrefetcher.next),
         'the training state must say how many batches of the epoch were used'),
        (fetch.CPUPrefetcher, 'reset', exact_resume.counting_reset(fetch.CPUPrefetcher.reset), 'the same, per epoch'),
        (sampler.EnlargedSampler, '__iter__', exact_resume.skipping_iter(sampler.EnlargedSampler.__iter__),
         'a resumed epoch goes on after the batches it used, with the random states it had'),
        (bsr_data, 'worker_init_fn', exact_resume.worker_init_fn,
         'it seeds each loader worker from its id and rank alone: every epoch repeated the same random crops'),
        (model, 'get_optimizer', optim.get_optimizer,
         'it knows only Adam; Restormer trains with AdamW and clips gradients; a non-finite gradient must not step '
         'NaN into the weights'),
        (model, 'setup_schedulers', lr_scheduler.setup_schedulers, 'it lacks Restormer\'s cyclic cosine schedule'),
        (model, '__init__', checking_training_options(model.__init__),
         'check clipping and skipping, record the iteration for the gradient guard, attach progressive patches '
         '(train.progressive), Restormer\'s mixing augmentation (train.mixing_augs), gradient accumulation '
         '(train.accum_iter), mixed precision (train.amp, val.amp), channels_last, torch.compile and TF32 before any '
         'network is built; BasicSR has no mixed precision, and SRModel\'s own step runs untouched when amp is off'),
        (bsr_train, 'create_train_val_dataloader', preflight.refusing_empty_loader(
            accumulation.loading_micro_batches(bsr_train.create_train_val_dataloader)),
         'under train.accum_iter the loader delivers every micro-batch of a step, and BasicSR\'s epoch arithmetic '
         'counts steps; a set smaller than one batch would train nothing and end as if it had'),
        (sr_model.SRModel, 'test', padded_test.padding_to_multiple(sr_model.SRModel.test),
         'a windowed network (SwinIR) fails on inputs that are not multiples of its window, such as Set5\'s LR '
         'images; BasicSR pads them in SwinIRModel only'),
        (bsr_train, 'build_dataset', preflight.checked(bsr_train.build_dataset),
         'a wrong dataroot or a damaged LMDB would surface only deep in a data-loader worker'),
        (bsr_test, 'build_dataset', preflight.checked(bsr_test.build_dataset), 'the same for testing'),
        (dataset, '__getitem__', preflight.naming_files(dataset.__getitem__),
         'an image that fails to decode raises an AttributeError that names no file'),
    ]


def apply():
    """Make every change of :func:`changes`, once; later calls do nothing."""
    if _APPLIED:
        return
    for owner, name, replacement, _ in changes():
        setattr(owner, name, replacement)
        _APPLIED.append((owner, name, replacement))


def applied():
    """The (owner, attribute, replacement) triples :func:`apply` set, in order."""
    return list(_APPLIED)
