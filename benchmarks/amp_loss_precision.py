"""fp32 vs autocast (bf16 / fp16) error of SKD's loss terms and their gradients, on CPU, at the demo's feature scales.

The measurement behind the float32 steps of SKD's losses under ``train.amp`` (:mod:`skd_basicsr.distill.mca`, the
``l1_per_sample`` of :mod:`skd_basicsr.distill.contrastive_loss`); it measures the code as it is.

The features come from the demo's trained teacher (Restormer dim 16) and a dim-10 student initialised from it by
weight selection, on 4 noisy 96 px crops of scikit-image photos (sigma 25), all 8 levels, 3 branches, exact spatial
MCA, L_CL in the teacher's space. Each loss is computed twice on the same inputs, the features the autocast forward
produced: once under autocast as training runs it, once in fp32 on those inputs upcast. The difference is what the
loss's own arithmetic adds. 'late' repeats it with the student's adapted features replaced by the teacher's plus 1%
noise, the regime of a student close to its teacher.

Usage:
    python benchmarks/amp_loss_precision.py [SIZE]     # crop side, default 96
"""
import sys
import tempfile

import numpy as np
import torch
from skimage import data as skdata

import skd_basicsr  # noqa: F401
from basicsr.models import build_model
from skd_basicsr.tools.demo import LEVELS, STUDENT, TEACHER, TEACHER_WEIGHTS

torch.manual_seed(0)
torch.set_num_threads(1)
SIZE = int(sys.argv[1]) if len(sys.argv) > 1 else 96


def batch():
    crops = []
    for name in ('astronaut', 'rocket', 'coffee', 'chelsea'):
        img = getattr(skdata, name)()[:SIZE * 2:2, :SIZE * 2:2, :3].astype(np.float32) / 255
        crops.append(torch.from_numpy(img).permute(2, 0, 1))
    gt = torch.stack(crops)
    return (gt + 25 / 255 * torch.randn_like(gt)), gt


opt = {'name': 'measure', 'model_type': 'SKDModel', 'is_train': True, 'dist': False, 'num_gpu': 0, 'scale': 1,
       'rank': 0, 'world_size': 1,
       'network_g': dict(STUDENT), 'network_t': dict(TEACHER),
       'path': {'pretrain_network_t': TEACHER_WEIGHTS, 'param_key_t': 'params', 'models': tempfile.mkdtemp(),
                'training_states': tempfile.mkdtemp()},
       'distill': {'init_from_teacher': True, 'features': [{'student': level, 'teacher': level} for level in LEVELS]},
       'train': {'optim_g': {'type': 'AdamW', 'lr': 1e-3}, 'scheduler': {'type': 'MultiStepLR', 'milestones': [10],
                                                                          'gamma': 0.5},
                 'total_iter': 10, 'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                 'feature_opt': {'type': 'SKDFeatureLoss', 'loss_weight': 0.1, 'mca_weight': 1.0, 'sigma': 1.0,
                                 'temperature': 'auto', 'branches': ['direct', 'channel', 'spatial']},
                 'contrast_opt': {'type': 'SKDContrastiveLoss', 'loss_weight': 0.1, 'feature_space': 'teacher',
                                  'positive': 'teacher'}},
       'val': {'metrics': {}}}
model = build_model(opt)
lq, gt = batch()
pairs = model.pairs
from skd_basicsr.distill.skd_loss import SKDFeatureLoss  # noqa: E402

branch_losses = {b: SKDFeatureLoss(loss_weight=0.1, branches=[b]) for b in ('direct', 'channel', 'spatial')}


def scaled_grad(value, inputs, dtype):
    """The gradient as training gets it: for fp16 at the largest loss scale (65536 halved as GradScaler backs off)
    whose gradient is finite; for bf16 unscaled."""
    scale = 65536.0 if dtype == torch.float16 else 1.0
    while True:
        grads = torch.autograd.grad(value * scale, inputs, retain_graph=True)
        if all(torch.isfinite(g).all() for g in grads) or scale < 1:
            SCALES.append(scale)
            return [g.float() / scale for g in grads]
        scale /= 2


SCALES = []


def rel(a, b):
    return (torch.linalg.vector_norm(a.double() - b.double()) / torch.linalg.vector_norm(b.double())).item()


def measure(dtype, late=False):
    with torch.autocast('cpu', dtype=dtype):
        with model.taps_s.recording() as fs:
            out = model.net_g(lq)
        with torch.no_grad(), model.taps_t.recording() as ft:
            out_t = model.net_t(lq)
        student = model.adapters([fs[p['student']] for p in pairs])
        anchor = model.contrast_space(out)
        with torch.no_grad():
            pos = [model.contrast_space(out_t)]
        neg = [model.cri_contrast.space.recorded(ft)]
    teacher = [ft[p['teacher']].detach() for p in pairs]
    if late:
        student = [(t.float() * (1 + 0.01 * torch.randn_like(t.float()))).to(t.dtype) for t in teacher]
    rows = {}
    leaves = [s.detach().requires_grad_() for s in student]
    leaves32 = [s.detach().float().requires_grad_() for s in student]
    for branch, loss in branch_losses.items():
        with torch.autocast('cpu', dtype=dtype):
            value = loss(leaves, teacher)[0]
        grads = scaled_grad(value, leaves, dtype)
        ref = loss(leaves32, [t.float() for t in teacher])[0]
        grads32 = torch.autograd.grad(ref, leaves32)
        g = torch.cat([x.float().flatten() for x in grads])
        g32 = torch.cat([x.flatten() for x in grads32])
        rows[f'l_gk_{branch}'] = (ref.item(), rel(value.float(), ref), rel(g, g32), str(value.dtype))
    a = {k: v.detach().requires_grad_() for k, v in anchor.items()}
    a32 = {k: v.detach().float().requires_grad_() for k, v in anchor.items()}
    with torch.autocast('cpu', dtype=dtype):
        value = model.cri_contrast.from_features(a, pos, neg)
    grads = scaled_grad(value, list(a.values()), dtype)
    ref = model.cri_contrast.from_features(a32, [{k: v.float() for k, v in p.items()} for p in pos],
                                           [{k: v.float() for k, v in n.items()} for n in neg])
    grads32 = torch.autograd.grad(ref, list(a32.values()))
    rows['l_cl'] = (ref.item(), rel(value.float(), ref), rel(torch.cat([x.float().flatten() for x in grads]),
                                                          torch.cat([x.flatten() for x in grads32])),
                    str(value.dtype))
    return rows


for dtype in (torch.bfloat16, torch.float16):
    for late in (False, True):
        print(f'--- {dtype} {"late (student = teacher + 1%)" if late else "start (student from the teacher)"}')
        for name, (ref, err, gerr, dt) in measure(dtype, late).items():
            print(f'{name:16s} fp32 {ref:.4e}  rel. error: value {err:.2e}  grad {gerr:.2e}  ({dt}, loss scale '
                  f'{SCALES.pop(0):g})')
