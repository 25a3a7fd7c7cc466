"""SKDModel: BasicSR's SRModel with a frozen teacher, feature taps, adapters and the SKD losses."""
import difflib
import inspect
from collections import OrderedDict
from copy import deepcopy

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.metrics import calculate_metric
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger, tensor2img
from basicsr.utils.registry import LOSS_REGISTRY, MODEL_REGISTRY
from torch.nn import functional as F

from skd_basicsr.distill.adapters import FeatureAdapters
from skd_basicsr.distill.taps import FeatureTaps
from skd_basicsr.distill.taps import describe_unknown_names
from skd_basicsr.distill.weight_selection import select_weights
from skd_basicsr.platform.errors import OptionError
from skd_basicsr.distill.feature_space import TeacherFeatureSpace
from skd_basicsr.platform import checkpoint
from skd_basicsr.distill.distill_schedule import DistillSchedule
from skd_basicsr.platform.network_spec import NetworkSpec, forward_padded

DISTILL_KEYS = ('features', 'adapter', 'init_from_teacher')
FEATURE_PAIR_KEYS = ('student', 'teacher')
SPATIAL_FORM_KEYS = ('spatial_window', 'spatial_tokens')  # optional per pair: the cheap spatial MCA form of that level
ADAPTER_TYPES = ('conv1x1', 'none')


checkpoint.freeze_on_resume('network_t')  # the teacher is never trained, so never saved: resuming keeps its weights


@MODEL_REGISTRY.register()
class SKDModel(SRModel):
    """Soft Knowledge Distillation of ``network_g`` (student) from ``network_t`` (teacher).

    Total loss ``L_REC + alpha2 L_GK + alpha3 L_CL`` with L_REC from ``train.pixel_opt`` (logged ``l_pix``), L_GK
    from ``train.feature_opt`` (``l_gk`` and its parts) and L_CL from ``train.contrast_opt`` (``l_cl``); the alphas
    are the ``loss_weight`` of the last two. ``train.output_opt`` (any BasicSR pixel loss between the student's and
    the teacher's outputs, logged ``l_kd``) gives the usual output-distillation baseline. A non-finite total loss
    stops the run before the step (naming the term and the last good checkpoint), or skips the step when
    ``train.skip_nonfinite: true``. Everything else (EMA, validation, checkpoints) is SRModel's.

    The teacher is built from ``network_t`` and loaded from ``path.pretrain_network_t`` (``param_key_t``,
    ``strict_load_t``); it stays frozen in eval mode, runs under ``torch.no_grad()``, is never in the optimizer, never
    wrapped in DDP and never saved. Features are tapped by module name (``distill.features``); 1x1 adapters map
    student channels to the teacher's where they differ and are trained, saved in the training states and resumed
    with the student, but never written to ``net_g_*.pth``. A pair may choose the cheap spatial MCA form of its level
    (``{student: encoder_level1, teacher: encoder_level1, spatial_window: 8}``, or ``spatial_tokens: M``); pairs
    without one keep the exact global form. With ``contrast_opt.feature_space: teacher`` (the default here) the model
    builds the teacher feature space of L_CL (:class:`TeacherFeatureSpace`) and gives it to the loss; the teacher's
    one forward on the input records the negative's features with the distilled ones (for super-resolution the
    negative is the input upsampled to the output's size, see :meth:`contrast_negative`).

    Resuming (``--auto_resume`` or ``path.resume_state``) points every ``network_<x>`` at the checkpoint saved at
    the resumed iteration, as BasicSR does, except the networks listed in ``frozen_networks`` (top-level option,
    by default ``[network_t]``): they are never trained, so never saved, and keep their configured weights and
    ``param_key`` (see :func:`skd_basicsr.platform.checkpoint.load_resume_state`).

    ``train.distill_schedule`` scales alpha2 and alpha3 over the iterations (warm-up, decay to zero; see
    :mod:`skd_basicsr.distill.distill_schedule`), logged as ``distill_scale``. ``contrast_opt.negatives`` chooses
    L_CL's negatives: the degraded input (the paper), the output of a lagging average of the student (``lagged``,
    kept here with decay ``contrast_opt.lag_decay`` and not saved: a resumed run restarts it from the resumed
    student) and the teacher's output for another image of the batch (``batch``); see :meth:`contrast_negatives`.

    ``distill.init_from_teacher: true`` initialises the student from the teacher's weights by weight selection
    (:func:`skd_basicsr.distill.weight_selection.select_weights`) before the first iteration, on a fresh start only:
    a resumed run continues from its own checkpoint, and it cannot be combined with ``path.pretrain_network_g``.
    """

    once_per_step = ('update_lagged_student', )  # under train.accum_iter, after the step only (accumulation.py)

    def init_training_settings(self):
        self.distill_opt = parse_distill_options(self.opt.get('distill'), self.opt['train'].get('feature_opt'))
        self.net_t = self.build_teacher()
        if self.distill_opt['init_from_teacher']:
            self.init_student_from_teacher()
        self.pairs = self.distill_opt['features']
        self.taps_s = FeatureTaps(self.get_bare_model(self.net_g), [p['student'] for p in self.pairs], 'network_g')

        train_opt = self.opt['train']
        self.cri_feat = build_loss_checked(train_opt, 'feature_opt', self.device, **self.distill_opt['spatial_forms'])
        self.cri_output = build_loss_checked(train_opt, 'output_opt', self.device)
        self.contrast_space = self.build_contrast_space(train_opt.get('contrast_opt'))
        given = {'feature_space': self.contrast_space} if self.contrast_space else {}
        self.cri_contrast = build_loss_checked(train_opt, 'contrast_opt', self.device, **given)
        self.skip_nonfinite = bool(train_opt.get('skip_nonfinite', False))
        self.distill_schedule = DistillSchedule.from_options(train_opt.get('distill_schedule'))
        if not self.distill_schedule.constant and not (self.cri_feat or self.cri_contrast):
            raise OptionError('train.distill_schedule scales feature_opt and contrast_opt, but neither is set; remove '
                              'the schedule or add a distillation term.')
        self.check_batch_negative()
        self.net_lag = self.build_lagged_student()
        teacher_layers = [p['teacher'] for p in self.pairs]
        self.taps_t = FeatureTaps(self.net_t, teacher_layers + (self.contrast_space.layers if given else []),
                                  'network_t')

        self.adapters = self.model_to_device_if_trainable(self.build_adapters())
        super().init_training_settings()

    # ----------------------------------------------------------------------------------------------------------
    # set-up
    # ----------------------------------------------------------------------------------------------------------
    def build_teacher(self):
        """Build ``network_t``, load its weights and freeze it."""
        if 'network_t' not in self.opt:
            raise OptionError('SKDModel needs `network_t` (the teacher architecture) in the options.')
        path = self.opt['path'].get('pretrain_network_t')
        if not path:
            raise OptionError('SKDModel needs `path: pretrain_network_t:` (the trained teacher weights); distilling '
                              'from an untrained teacher teaches nothing.')
        net_t = build_network(deepcopy(self.opt['network_t'])).to(self.device)
        strict = self.opt['path'].get('strict_load_t', True)
        state = checkpoint.read_weights(path, self.opt['path'].get('param_key_t', 'params'), key_option='param_key_t')
        checkpoint.check_fit(net_t, state, strict, f'path.pretrain_network_t {path} does not fit network_t',
                             'strict_load_t')
        net_t.load_state_dict(state, strict=strict)
        net_t.eval()
        net_t.requires_grad_(False)
        self.print_network(net_t)
        return net_t

    def init_student_from_teacher(self):
        """Weight selection of the student from the loaded teacher (``distill.init_from_teacher``); fresh starts
        only."""
        logger = get_root_logger()
        if self.opt['path'].get('resume_state'):
            logger.info('distill.init_from_teacher: resuming, so the student continues from its own checkpoint.')
            return
        if self.opt['path'].get('pretrain_network_g'):
            raise OptionError('distill.init_from_teacher and path.pretrain_network_g both set the student\'s initial '
                              'weights; keep one of them.')
        net_g = self.get_bare_model(self.net_g)
        try:
            state, report = select_weights(self.net_t.state_dict(), net_g, teacher_net=self.net_t)
        except OptionError as err:
            raise OptionError(f'distill.init_from_teacher: {err}') from None
        net_g.load_state_dict(state, strict=True)
        logger.info('distill.init_from_teacher: network_g initialised from network_t by weight selection.')
        for line in report.lines():
            logger.info(line)

    def build_contrast_space(self, contrast_opt):
        """The teacher feature space of L_CL for ``feature_space: teacher``, else None (the loss builds its own).

        Under SKDModel ``feature_space`` defaults to ``teacher``: it needs no download, and the model has the
        teacher. ``feature_space: vgg19`` stays available by name.
        """
        if not contrast_opt or contrast_opt.get('feature_space', 'teacher') != 'teacher':
            return None
        try:
            space = TeacherFeatureSpace(lambda img, layers: self.taps_t.capture(self.net_t, img, layers),
                                        contrast_opt.get('layer_weights'))
        except ValueError as err:
            raise OptionError(f'train.contrast_opt: {err}') from None
        modules = dict(self.net_t.named_modules())
        unknown = [layer for layer in space.layers if layer not in modules or layer == '']
        if unknown:
            default = '' if contrast_opt.get('layer_weights') else ' (the default, Restormer\'s encoder levels)'
            raise OptionError(f'train.contrast_opt.layer_weights{default}: '
                              f'{describe_unknown_names(unknown, modules, "network_t")}')
        return space

    def check_batch_negative(self):
        """L_CL's ``batch`` negative takes another image of the batch: refuse a batch of one before training."""
        if not (self.cri_contrast and 'batch' in self.cri_contrast.negatives):
            return
        batch = self.opt.get('datasets', {}).get('train', {}).get('batch_size_per_gpu')
        if batch is not None and batch < 2:
            raise OptionError('train.contrast_opt.negatives: batch takes another image of the batch, but '
                              f'datasets.train.batch_size_per_gpu is {batch}; use 2 or more, or drop batch.')

    def build_lagged_student(self):
        """The lagging average of the student that makes L_CL's ``lagged`` negative, or None when it is not used.

        A frozen copy of the student as it starts (after ``init_from_teacher`` or the resumed weights), moved
        towards the student after every step (:meth:`update_lagged_student`).
        """
        if not (self.cri_contrast and 'lagged' in self.cri_contrast.negatives):
            return None
        net_lag = deepcopy(self.get_bare_model(self.net_g))
        net_lag.eval()
        net_lag.requires_grad_(False)
        return net_lag

    @torch.no_grad()
    def update_lagged_student(self):
        if self.net_lag is None:
            return
        decay = self.cri_contrast.lag_decay
        net_g = self.get_bare_model(self.net_g)
        for lagged, current in zip(self.net_lag.parameters(), net_g.parameters()):
            lagged.lerp_(current.detach(), 1 - decay)
        for lagged, current in zip(self.net_lag.buffers(), net_g.buffers()):
            lagged.copy_(current)

    def build_adapters(self):
        """Discover feature shapes with one dummy forward of both nets, check them, and build the adapters.

        The same forward finds the taps whose output a later in-place op changes (:meth:`FeatureTaps.find_inplace`).
        The student runs it in eval mode, so that a network with BatchNorm keeps its running statistics.
        """
        net_g = self.get_bare_model(self.net_g)
        spec_t = NetworkSpec.from_options(self.opt['network_t'], 'network_t')
        probe = NetworkSpec.from_options(self.opt['network_g']).probe(self.device, spec_t)
        was_training = net_g.training
        net_g.eval()
        try:
            with torch.no_grad():
                out_s, feats_s = self.taps_s.find_inplace(net_g, probe)
                out_t, feats_t = self.taps_t.find_inplace(self.net_t, probe)
        finally:
            net_g.train(was_training)
        if out_s.shape != out_t.shape:
            raise OptionError(f'network_g outputs {tuple(out_s.shape)} but network_t outputs {tuple(out_t.shape)} '
                              f'for an input of {tuple(probe.shape)}; student and teacher must restore to the same '
                              'shape.')
        if self.cri_contrast and probe.shape[1] != out_t.shape[1]:
            raise OptionError(f'train.contrast_opt: L_CL takes the input as its negative, but the input has '
                              f'{probe.shape[1]} channels and the output {out_t.shape[1]}; remove contrast_opt for '
                              'this network.')
        channels_s, channels_t = [], []
        for pair in self.pairs:
            s, t = feats_s[pair['student']], feats_t[pair['teacher']]
            where = f"distill.features {pair['student']} -> {pair['teacher']}"
            if not (torch.is_tensor(s) and s.dim() == 4 and torch.is_tensor(t) and t.dim() == 4):
                raise OptionError(f'{where}: both modules must output one (B, C, H, W) tensor.')
            if s.shape[-2:] != t.shape[-2:]:
                raise OptionError(f'{where}: spatial sizes differ (student {tuple(s.shape[-2:])}, teacher '
                                  f'{tuple(t.shape[-2:])} for a {probe.shape[-1]}x{probe.shape[-1]} input); pair levels of '
                                  'the same resolution.')
            if s.shape[1] != t.shape[1] and self.distill_opt['adapter'] == 'none':
                raise OptionError(f'{where}: channels differ (student {s.shape[1]}, teacher {t.shape[1]}) and '
                                  'distill.adapter is none; set `adapter: conv1x1` or pair levels of equal width.')
            channels_s.append(s.shape[1])
            channels_t.append(t.shape[1])
        return FeatureAdapters(channels_s, channels_t).to(self.device)

    def model_to_device_if_trainable(self, net):
        # DDP refuses modules without trainable parameters (all levels may be identities)
        if any(p.requires_grad for p in net.parameters()):
            return self.model_to_device(net)
        return net.to(self.device)

    def setup_optimizers(self):
        """One optimizer over the student and the adapters, as SRModel builds it for the student alone."""
        train_opt = self.opt['train']
        params = [v for v in self.net_g.parameters() if v.requires_grad]
        params += [v for v in self.adapters.parameters() if v.requires_grad]
        optim_opt = deepcopy(train_opt['optim_g'])
        optim_type = optim_opt.pop('type')
        self.optimizer_g = self.get_optimizer(optim_type, params, **optim_opt)
        self.optimizers.append(self.optimizer_g)

    # ----------------------------------------------------------------------------------------------------------
    # training
    # ----------------------------------------------------------------------------------------------------------
    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        with self.taps_s.recording() as feats_s:
            self.output = self.net_g(self.lq)
        # no_grad, not inference_mode: inference tensors cannot be saved for backward, so a loss whose backward keeps
        # its target (MSELoss, and any user loss) would fail on the teacher's output and features. The graph is not
        # recorded either way; inference_mode only also skips version-counter and view bookkeeping, a per-tensor
        # constant that is nothing beside the teacher's convolutions, and it would cost a clone of every teacher
        # tensor a loss saves.
        with torch.no_grad(), self.taps_t.recording() as feats_t:
            self.output_t = self.net_t(self.lq)

        terms = self.loss_terms(feats_s, feats_t, self.distill_schedule(current_iter))
        l_total = sum(value for _, value, summed in terms if summed)
        loss_dict = OrderedDict((name, value) for name, value, _ in terms)
        if not self.finite_on_every_rank(l_total):
            self.log_dict = self.reduce_loss_dict(loss_dict)
            self.handle_nonfinite(current_iter, loss_dict)
            return
        l_total.backward()
        self.optimizer_g.step()
        self.update_lagged_student()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def loss_terms(self, feats_s, feats_t, scale=1.0):
        """Every logged loss value in log order, as (name, value, summed into the total).

        SRModel's pixel and perceptual terms, then L_GK (summed) and its parts (logged only), output KD and L_CL.
        ``scale`` (from ``train.distill_schedule``) multiplies L_GK and L_CL; at 0 they are not computed and are
        logged as 0.
        """
        zero = self.output.new_zeros(())
        terms = []
        if self.cri_pix:
            terms.append(('l_pix', self.cri_pix(self.output, self.gt), True))
        if self.cri_perceptual:
            percep_style = zip(('l_percep', 'l_style'), self.cri_perceptual(self.output, self.gt))
            terms += [(name, value, True) for name, value in percep_style if value is not None]
        if self.cri_feat and scale > 0:
            student = self.adapters([feats_s[p['student']] for p in self.pairs])
            l_gk, parts = self.cri_feat(student, [feats_t[p['teacher']] for p in self.pairs])
            terms += [('l_gk', scale * l_gk, True)] + [(name, scale * value, False) for name, value in parts.items()]
        elif self.cri_feat:
            # the adapters do not run at all (not even under DDP, whose reducer waits only for modules that ran)
            terms.append(('l_gk', zero, True))
        if self.cri_output:
            terms.append(('l_kd', self.cri_output(self.output, self.output_t), True))
        if self.cri_contrast and scale > 0:
            negatives, negative_feats = self.contrast_negatives(feats_t)
            l_cl = self.cri_contrast(self.output, self.output_t, negatives, gt=self.gt, negative_feats=negative_feats)
            terms.append(('l_cl', scale * l_cl, True))
        elif self.cri_contrast:
            terms.append(('l_cl', zero, True))
        if not self.distill_schedule.constant:
            terms.append(('distill_scale', self.output.new_tensor(float(scale)), False))
        return terms

    def contrast_negatives(self, feats_t):
        """L_CL's negatives (``contrast_opt.negatives``) and their features where they are already known.

        * ``input``: the degraded input. For restoration at scale 1 it is the negative as it is, and in the teacher
          feature space its features are the teacher's taps from its forward on the input. For super-resolution the
          input is smaller than the output: the negative is its bicubic upsampling (what a network that adds no
          detail would return), and its features need one more (partial) teacher forward, at the output's size, as
          the anchor's do.
        * ``lagged``: the lagging student average's output on the input (one more student forward, no gradient).
        * ``batch``: the teacher's output for the next image of the batch (rolled by one), a restored image of other
          content.

        Returns:
            tuple[list[Tensor], list[dict | None]]: The negatives and their features (None where not known).
        """
        negatives, feats = [], []
        for name in self.cri_contrast.negatives:
            if name == 'input' and self.lq.shape[-2:] == self.output.shape[-2:]:
                negatives.append(self.lq)
                feats.append(self.contrast_space.recorded(feats_t) if self.contrast_space else None)
                continue
            with torch.no_grad():
                if name == 'input':
                    negative = F.interpolate(self.lq, size=self.output.shape[-2:], mode='bicubic',
                                             align_corners=False).clamp(0, 1)
                elif name == 'lagged':
                    negative = self.net_lag(self.lq)
                else:
                    if self.output_t.shape[0] < 2:
                        raise ValueError('train.contrast_opt.negatives: batch needs at least 2 images per batch.')
                    negative = self.output_t.roll(1, dims=0)
            negatives.append(negative)
            feats.append(None)
        return negatives, feats

    def finite_on_every_rank(self, l_total):
        """Whether the total loss is finite on every process.

        Under DDP every rank must take the same branch: a rank that skips the backward while the others enter its
        gradient all-reduce hangs the run, and ranks that step on different iterations drift apart. One all-reduce
        of a flag (the minimum of finite = 1, non-finite = 0) makes the decision common before anyone steps.
        """
        finite = torch.isfinite(l_total.detach()).all()
        if not self.opt.get('dist', False):
            return bool(finite)
        flag = finite.to(torch.float32).reshape(1)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())

    def handle_nonfinite(self, current_iter, loss_dict):
        """Skip the step (``train.skip_nonfinite: true``) or stop, naming the term and the last good checkpoint.

        Every rank comes here together (:meth:`finite_on_every_rank`); a rank whose own terms are finite says that
        another rank's were not.
        """
        bad = [name for name, value in loss_dict.items() if not torch.isfinite(value).all()]
        where = ', '.join(bad) if bad else 'of another rank'
        self.optimizer_g.zero_grad()
        if self.skip_nonfinite:
            self.skipped_step = True  # under train.accum_iter: the step's other micro-batches are given up too
            get_root_logger().warning(f'iter {current_iter}: non-finite loss term(s) {where}; step skipped on every '
                                      'rank (train.skip_nonfinite).')
            return
        last = checkpoint.latest_training_state(self.opt)
        raise FloatingPointError(
            f'iter {current_iter}: the loss term(s) {where} became non-finite; training stopped before '
            f'the step, so no weight was touched. Last good checkpoint: {last or "none yet"}. Lower the learning '
            'rate or the loss weights and resume with --auto_resume, or set train.skip_nonfinite: true to skip '
            'such steps.')

    # ----------------------------------------------------------------------------------------------------------
    # validation
    # ----------------------------------------------------------------------------------------------------------
    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        if self.is_train and self.opt['val'].get('metrics'):
            self.report_teacher_once(dataloader, current_iter, tb_logger)
        super().nondist_validation(dataloader, current_iter, tb_logger, save_img)

    def report_teacher_once(self, dataloader, current_iter=0, tb_logger=None):
        """Log the teacher's metrics on a validation set the first time it is seen: a wrong teacher shows at once.

        The input is padded to the multiple ``network_t`` needs, as validation pads it for ``network_g``
        (:mod:`skd_basicsr.platform.padded_test`). The metrics go to the text log and, as
        ``teacher/metrics/<dataset>/<metric>`` beside BasicSR's own ``metrics/<dataset>/<metric>``, to TensorBoard (and
        through it to wandb, which BasicSR syncs from TensorBoard).
        """
        name = dataloader.dataset.opt['name']
        self.teacher_metrics = getattr(self, 'teacher_metrics', {})
        if name in self.teacher_metrics:
            return
        sums = {metric: 0.0 for metric in self.opt['val']['metrics']}
        count = 0
        multiple = NetworkSpec.from_options(self.opt['network_t'], 'network_t').size_multiple
        for data in dataloader:
            with torch.inference_mode():
                output = forward_padded(self.net_t, data['lq'].to(self.device), multiple)
            metric_data = {'img': tensor2img([output.cpu()])}
            if 'gt' in data:
                metric_data['img2'] = tensor2img([data['gt']])
            for metric, metric_opt in self.opt['val']['metrics'].items():
                sums[metric] += calculate_metric(metric_data, metric_opt)
            count += 1
        self.teacher_metrics[name] = {metric: value / max(count, 1) for metric, value in sums.items()}
        text = '\t'.join(f'# {metric}: {value:.4f}' for metric, value in self.teacher_metrics[name].items())
        get_root_logger().info(f'Teacher (network_t) on {name}:\t{text}')
        if tb_logger:
            for metric, value in self.teacher_metrics[name].items():
                tb_logger.add_scalar(f'teacher/metrics/{name}/{metric}', value, current_iter)

    # ----------------------------------------------------------------------------------------------------------
    # checkpoints
    # ----------------------------------------------------------------------------------------------------------
    def get_training_state(self, epoch, current_iter):
        """BasicSR's training state plus the adapters."""
        state = super().get_training_state(epoch, current_iter)
        state['adapters'] = self.get_bare_model(self.adapters).state_dict()
        return state

    def resume_training(self, resume_state):
        # checked first: the optimizer's state of a non-SKD run lacks the adapters' parameters, and its load would
        # fail with a message about parameter groups instead
        if 'adapters' not in resume_state:
            raise OptionError('The training state has no adapters: it was not written by SKDModel.')
        super().resume_training(resume_state)
        self.get_bare_model(self.adapters).load_state_dict(resume_state['adapters'])


def parse_distill_options(distill_opt, feature_opt=None):
    """Check the ``distill`` section and fill its defaults.

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
    if not isinstance(init_from_teacher, bool):
        raise OptionError(f'distill.init_from_teacher must be true or false, got {init_from_teacher!r}.')
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
            'spatial_forms': spatial_forms}


def build_loss_checked(train_opt, key, device, **given):
    """``build_loss(train_opt[key])`` (None when absent), with a misspelt option named instead of a TypeError.

    ``given`` replaces options with objects the model built (``feature_space`` of L_CL).
    """
    loss_opt = train_opt.get(key)
    if not loss_opt:
        return None
    loss_type = loss_opt.get('type')
    try:
        cls = LOSS_REGISTRY.get(loss_type)
    except KeyError:
        raise OptionError(f'train.{key}: no loss type {loss_type!r} in BasicSR\'s registry.') from None
    known = [name for name in inspect.signature(cls.__init__).parameters if name != 'self']
    unknown = sorted(set(loss_opt) - set(known) - {'type'})
    if unknown:
        close = {name: difflib.get_close_matches(name, known, n=1) for name in unknown}
        hints = ', '.join(f'{n!r} (did you mean {c[0]!r}?)' if c else repr(n) for n, c in close.items())
        raise OptionError(f'train.{key}: unknown option(s) {hints} for {loss_type}; its options are {known}.')
    try:
        return build_loss(dict(loss_opt, **given)).to(device)
    except (ValueError, FileNotFoundError) as err:
        raise OptionError(f'train.{key}: {err}') from None

