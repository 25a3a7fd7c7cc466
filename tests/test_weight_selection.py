"""Weight selection (a student initialised from a larger teacher) and ``basicsr shrink``.

The consistency tests build a wide teacher that computes the same function as a narrow network N, by "tiled
copies": along every axis that doubles, each group of N's channels appears twice; an output axis repeats the
group, an input axis reads only its first copy (the duplicate's weights are zero). That wide net is checked
against N first, with code that knows nothing of the selection rules; a student of N's size selected from it
must then be N exactly.
"""
import re

import pytest
import torch
import yaml
from torch import nn

import skd_basicsr  # noqa: F401  (registries and the torchvision shim BasicSR needs)
from basicsr.archs.edsr_arch import EDSR
from basicsr.archs.ridnet_arch import RIDNet
from basicsr.archs.rrdbnet_arch import RRDBNet
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.archs.swinir_arch import SwinIR
from skd_basicsr.platform.archs.restormer_arch import Restormer
from skd_basicsr.distill.weight_selection import evenly_spaced, select_weights
from skd_basicsr.platform.errors import OptionError
from skd_basicsr.tools.shrink import main as shrink_main

# BasicSR 1.4.2's SwinIR calls torch.meshgrid without indexing=, which torch warns about on every construction
pytestmark = pytest.mark.filterwarnings('ignore:torch.meshgrid:UserWarning')


def restormer(dim=4, num_blocks=(1, 1, 1, 1), refinement=1, heads=(1, 2, 2, 4), **kwargs):
    return Restormer(dim=dim,
                     num_blocks=list(num_blocks),
                     num_refinement_blocks=refinement,
                     heads=list(heads),
                     ffn_expansion_factor=2.0,
                     **kwargs)


def swinir(dim=6, depths=(2, 2), heads=(2, 2), upscale=1, upsampler='', **kwargs):
    return SwinIR(img_size=8,
                  in_chans=3,
                  embed_dim=dim,
                  depths=list(depths),
                  num_heads=list(heads),
                  window_size=4,
                  mlp_ratio=2.0,
                  upscale=upscale,
                  upsampler=upsampler,
                  drop_path_rate=0.0,
                  **kwargs)


def rrdbnet(feat=4, grow=2, blocks=2):
    return RRDBNet(3, 3, scale=2, num_feat=feat, num_block=blocks, num_grow_ch=grow)


def edsr(feat=4, blocks=2):
    return EDSR(3, 3, num_feat=feat, num_block=blocks, upscale=2, img_range=1.0)


# (teacher, student, input): teacher and student of one family, the student narrower and shallower
FAMILIES = {
    'Restormer': (lambda: restormer(8, (2, 3, 2, 2), 3, bias=True), lambda: restormer(4, (1, 2, 1, 2), 2), (16, 16)),
    'EDSR': (lambda: edsr(8, 3), lambda: edsr(4, 2), (8, 8)),
    'RRDBNet': (lambda: rrdbnet(8, 4, 3), lambda: rrdbnet(4, 2, 2), (8, 8)),
    'SwinIR': (lambda: swinir(12, (2, 2), (2, 2)), lambda: swinir(6, (1, 2), (2, 1)), (8, 8)),
}


def randomised(net, seed=0):
    """``net`` with every floating tensor of its state drawn at random (zero biases and unit norms would hide
    mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    state = {
        k: torch.randn(v.shape, generator=gen) * 0.3 if v.is_floating_point() and not k.endswith('attn_mask') else v
        for k, v in net.state_dict().items()
    }
    net.load_state_dict(state)
    return net.eval()


def run(net, size, seed=1):
    dtype = next(net.parameters()).dtype
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
    with torch.no_grad():
        return net(x)


@pytest.mark.parametrize('family', FAMILIES)
def test_a_student_of_the_teachers_size_is_the_teacher(family):
    make_teacher, _, size = FAMILIES[family]
    teacher = randomised(make_teacher())
    student = randomised(make_teacher(), seed=5)
    state, report = select_weights(teacher.state_dict(), student)
    assert report.arch == family and report.filled == report.total == report.teacher_total
    assert all(torch.equal(state[k], v) for k, v in teacher.state_dict().items())
    student.load_state_dict(state, strict=True)
    assert torch.equal(run(student, size), run(teacher, size))


@pytest.mark.parametrize('family', FAMILIES)
def test_every_student_parameter_comes_from_one_teacher_tensor(family):
    make_teacher, make_student, _ = FAMILIES[family]
    teacher_state = make_teacher().state_dict()
    offset, unique, origin = 1000, {}, {}
    for key, tensor in teacher_state.items():
        if tensor.is_floating_point():  # every entry a value no other entry and no random init has
            unique[key] = torch.arange(offset, offset + tensor.numel(), dtype=torch.float64).reshape(tensor.shape)
            origin[offset] = key
            offset += tensor.numel()
        else:
            unique[key] = tensor
    starts = sorted(origin)
    student = make_student().double()
    state, report = select_weights(unique, student)
    student.load_state_dict(state, strict=True)
    assert report.filled == report.total < report.teacher_total
    for name, param in student.named_parameters():
        values = param.detach().flatten().long()
        assert values.min() >= 1000 and len(values.unique()) == len(values), name
        first = max(s for s in starts if s <= values.min())
        source = origin[first]
        assert values.max() < first + teacher_state[source].numel(), f'{name} mixes teacher tensors'
        # same tensor kind: the names agree once block indices are ignored
        assert [p for p in source.split('.') if not p.isdigit()] == [p for p in name.split('.') if not p.isdigit()]


# --------------------------------------------------------------------------------------------------------------
# tiled copies
# --------------------------------------------------------------------------------------------------------------
def tile(narrow_state, wide_state, groups):
    """The wide state of tiled copies of ``narrow_state``; ``groups(name, axis)`` gives the narrow group lengths
    along an axis that doubles (default one group)."""
    out = {}
    for name, wide in wide_state.items():
        tensor = narrow_state[name]
        for axis in range(tensor.dim()):
            length = tensor.shape[axis]
            if wide.shape[axis] == length:
                continue
            assert wide.shape[axis] == 2 * length, (name, axis)
            copies = []
            for chunk in tensor.split(groups(name, axis) or [length], dim=axis):
                reads_input = axis == 1 and tensor.dim() > 1
                copies += [chunk, torch.zeros_like(chunk) if reads_input else chunk]
            tensor = torch.cat(copies, dim=axis)
        out[name] = tensor
    return out


def restormer_groups(narrow, whole_heads=False):
    """Narrow group lengths of Restormer's tensors: per head in q, k, v (or, with ``whole_heads``, all of q, of k
    and of v, so that the wide net's extra heads are copies of the narrow heads); per FFN gate half; per
    concatenated part."""
    d = narrow.patch_embed.proj.out_channels
    concatenated = {
        ('reduce_chan_level3.weight', 1): 4 * d,
        ('reduce_chan_level2.weight', 1): 2 * d,
        ('output.weight', 1): d,
        ('skip_conv.weight', 0): d,
        ('skip_conv.bias', 0): d
    }

    def groups(name, axis):
        if (name, axis) in concatenated:
            return [concatenated[name, axis]] * 2
        parts = name.split('.')
        if not parts[1].isdigit():
            return None
        block = narrow.get_submodule('.'.join(parts[:2]))
        tail = '.'.join(parts[2:-1])
        width = block.attn.project_out.out_channels
        head_groups = 1 if whole_heads else block.attn.num_heads
        head = width // head_groups
        hidden = block.ffn.project_out.in_channels
        stream_input = {'attn.qkv': 1, 'ffn.project_in': 1}.get(tail)
        output_side = axis == 0 and (tail in ('attn.project_out', 'ffn.project_out') or tail.startswith('norm'))
        if parts[0] in ('decoder_level1', 'refinement') and (axis == stream_input or output_side):
            return [width // 2] * 2  # [upsampled level 2, encoder level 1]
        if axis == 0 and tail in ('attn.qkv', 'attn.qkv_dwconv'):
            return [head] * (3 * head_groups)
        if axis == 1 and tail == 'attn.project_out':
            return [head] * head_groups
        if axis == 0 and tail in ('ffn.project_in', 'ffn.dwconv'):
            return [hidden] * 2
        return None

    return groups


def rrdbnet_groups(narrow):
    feat, grow = narrow.conv_first.out_channels, narrow.body[0].rdb1.conv1.out_channels

    def groups(name, axis):
        conv = name.split('.')[3] if name.startswith('body.') else ''
        if axis == 1 and conv.startswith('conv') and conv != 'conv1':
            return [feat] + [grow] * (int(conv[-1]) - 1)  # dense connection [x, x1, ..., x_{k-1}]
        return None

    return groups


def swinir_groups(narrow):

    def groups(name, axis):
        if '.attn.' not in name:
            return None
        attn = narrow.get_submodule(name.rsplit('.', 2)[0])
        head = attn.dim // attn.num_heads
        if name.endswith(('qkv.weight', 'qkv.bias')) and axis == 0:
            return [head] * (3 * attn.num_heads)
        if name.endswith('proj.weight') and axis == 1:
            return [head] * attn.num_heads
        return None

    return groups


SCALE = 6**-0.5  # q k scale of a narrow SwinIR head (6 channels); tiled heads double the product, so halve it
TILED = {  # narrow, wide (same function once tiled), groups, input size
    'Restormer': (lambda: restormer(4, bias=True), lambda: restormer(8, bias=True), restormer_groups, (16, 16)),
    'Restormer-BiasFree-dual-pixel': (
        lambda: restormer(4, inp_channels=3, LayerNorm_type='BiasFree', dual_pixel_task=True),
        lambda: restormer(8, inp_channels=3, LayerNorm_type='BiasFree', dual_pixel_task=True), restormer_groups,
        (16, 16)),
    'Restormer-twice-the-heads': (lambda: restormer(4, heads=(1, 1, 2, 2)), lambda: restormer(8, heads=(2, 2, 4, 4)),
                                  lambda narrow: restormer_groups(narrow, whole_heads=True), (16, 16)),
    'RRDBNet': (lambda: rrdbnet(4, 2), lambda: rrdbnet(8, 4), rrdbnet_groups, (8, 8)),
    'EDSR': (lambda: edsr(4), lambda: edsr(8), lambda narrow: lambda name, axis: None, (8, 8)),
    'SwinIR': (lambda: swinir(12, heads=(2, 2), qk_scale=SCALE), lambda: swinir(24, heads=(2, 2), qk_scale=SCALE / 2),
               swinir_groups, (8, 8)),
}


@pytest.mark.parametrize('case', TILED)
def test_a_student_selected_from_tiled_copies_is_the_narrow_network(case):
    make_narrow, make_wide, make_groups, size = TILED[case]
    # float64: random weights make outputs of a few thousand, where float32 rounding alone reaches 1e-3
    narrow, wide = randomised(make_narrow()).double(), make_wide().double().eval()
    wide.load_state_dict(tile(narrow.state_dict(), wide.state_dict(), make_groups(narrow)))
    expected = run(narrow, size)
    torch.testing.assert_close(run(wide, size), expected, rtol=0, atol=1e-9)  # the construction is right

    student = randomised(make_narrow(), seed=3).double()
    state, _ = select_weights(wide.state_dict(), student)
    student.load_state_dict(state, strict=True)
    torch.testing.assert_close(run(student, size), expected, rtol=0, atol=1e-9)


def test_the_plain_leading_slice_breaks_restormer_heads_and_gates():
    narrow, wide = randomised(restormer(4)).double(), restormer(8).double().eval()
    wide.load_state_dict(tile(narrow.state_dict(), wide.state_dict(), restormer_groups(narrow)))
    naive = restormer(4).double().eval()
    state, report = select_weights(wide.state_dict(), naive, arch='generic')
    naive.load_state_dict(state)
    assert report.arch == 'generic'
    assert (run(naive, (16, 16)) - run(narrow, (16, 16))).abs().max() > 1e-2


# --------------------------------------------------------------------------------------------------------------
# depth
# --------------------------------------------------------------------------------------------------------------
def test_evenly_spaced_keeps_first_and_last():
    assert evenly_spaced(3, 5) == [0, 2, 4]
    assert evenly_spaced(2, 4) == [0, 3]
    assert evenly_spaced(3, 4) == [0, 2, 3]
    assert evenly_spaced(4, 4) == [0, 1, 2, 3]
    assert evenly_spaced(1, 3) == [0]


def test_restormer_stages_take_the_reported_blocks():
    teacher = randomised(restormer(4, (4, 5, 3, 2), 4))
    state, report = select_weights(teacher.state_dict(), restormer(4, (2, 3, 1, 2), 3))
    expected = {
        'encoder_level1': [0, 3],
        'encoder_level2': [0, 2, 4],
        'encoder_level3': [0],
        'latent': [0, 1],
        'decoder_level3': [0],
        'decoder_level2': [0, 2, 4],
        'decoder_level1': [0, 3],
        'refinement': [0, 2, 3]
    }
    assert {name: stage.kept for name, stage in report.stages.items()} == expected
    teacher_state = teacher.state_dict()
    for name, tensor in state.items():
        stage, index, tail = name.split('.', 2) if name.split('.')[0] in expected else (name, None, None)
        source = f'{stage}.{expected[stage][int(index)]}.{tail}' if index is not None else name
        assert torch.equal(tensor, teacher_state[source]), name


def test_swinir_layers_and_their_blocks_are_chosen_in_turn():
    teacher = randomised(swinir(6, (3, 2, 4), (2, 2, 2)))
    state, report = select_weights(teacher.state_dict(), swinir(6, (2, 1), (2, 2)))
    assert {
        name: (stage.teacher, stage.kept)
        for name, stage in report.stages.items()
    } == {
        'layers': ('layers', [0, 2]),
        'layers.0.residual_group.blocks': ('layers.0.residual_group.blocks', [0, 2]),
        'layers.1.residual_group.blocks': ('layers.2.residual_group.blocks', [0]),
    }
    teacher_state = teacher.state_dict()
    assert torch.equal(state['layers.1.residual_group.blocks.0.mlp.fc1.weight'],
                       teacher_state['layers.2.residual_group.blocks.0.mlp.fc1.weight'])
    assert torch.equal(state['layers.0.residual_group.blocks.1.attn.qkv.bias'],
                       teacher_state['layers.0.residual_group.blocks.2.attn.qkv.bias'])
    assert torch.equal(state['layers.1.conv.weight'], teacher_state['layers.2.conv.weight'])


class Block(nn.Module):

    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


class TinyNet(nn.Module):
    """A network without rules of its own: the generic rule applies when asked for."""

    def __init__(self, width, blocks, in_ch=3):
        super().__init__()
        self.head = nn.Conv2d(in_ch, width, 3, padding=1)
        self.body = nn.Sequential(*[Block(width) for _ in range(blocks)])
        self.tail = nn.Conv2d(width, 3, 3, padding=1)


def test_generic_rule_slices_leading_entries_and_spaces_blocks():
    teacher = randomised(TinyNet(8, 4)).state_dict()
    state, report = select_weights(teacher, TinyNet(3, 2), generic=True)
    assert report.arch == 'generic' and report.stages['body'].kept == [0, 3]
    assert torch.equal(state['head.weight'], teacher['head.weight'][:3])
    assert torch.equal(state['body.1.conv.weight'], teacher['body.3.conv.weight'][:3, :3])
    assert torch.equal(state['tail.weight'], teacher['tail.weight'][:, :3])
    with pytest.raises(OptionError, match="no weight-selection rules named 'UNet'"):
        select_weights(teacher, TinyNet(3, 2), arch='UNet')


class ConvAndLinear(nn.Module):
    """No rules of its own: a convolution and a Linear, as in the token mixers of NAFNet, HAT or Uformer."""

    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.mix = nn.Linear(width, 2 * width)


@pytest.mark.parametrize('make', [lambda width: RIDNet(3, width, 3, num_block=2), ConvAndLinear],
                         ids=['RIDNet', 'ConvAndLinear'])
def test_an_architecture_without_rules_is_refused_unless_the_generic_slice_is_asked_for(make):
    teacher, student = randomised(make(32)).state_dict(), make(16)
    name = type(student).__name__
    with pytest.raises(OptionError) as refused:
        select_weights(teacher, student)
    message = str(refused.value)
    assert f'no weight-selection rules for {name}: rules exist for EDSR, RRDBNet, Restormer, SwinIR.' in message
    assert '`basicsr shrink --generic`' in message and '`distill.init_from_teacher: generic`' in message
    assert 'it scrambles attention heads and gated layers' in message
    state, report = select_weights(teacher, student, generic=True)
    assert report.arch == 'generic' and report.filled == report.total
    student.load_state_dict(state, strict=True)
    for key, tensor in state.items():  # every tensor the leading corner of the teacher's
        assert torch.equal(tensor, teacher[key][tuple(slice(0, n) for n in tensor.shape)]), key


def test_the_generic_slice_keeps_leading_entries_of_linear_layers_and_says_so():
    teacher = randomised(ConvAndLinear(8)).state_dict()
    state, report = select_weights(teacher, ConvAndLinear(4), generic=True)
    assert torch.equal(state['conv.weight'], teacher['conv.weight'][:4])
    assert torch.equal(state['mix.weight'], teacher['mix.weight'][:8, :4])
    assert torch.equal(state['mix.bias'], teacher['mix.bias'][:8])
    assert 'attention heads and gated layers, if the network has any, are not kept whole' in '\n'.join(report.lines())


def test_generic_does_not_replace_the_rules_of_a_family_that_has_them():
    teacher = randomised(restormer(8)).state_dict()
    ruled, report = select_weights(teacher, restormer(4), generic=True)
    expected, _ = select_weights(teacher, restormer(4))
    assert report.arch == 'Restormer' and all(torch.equal(ruled[k], v) for k, v in expected.items())
    sliced, forced = select_weights(teacher, restormer(4), arch='generic')  # the slice is still there when forced
    qkv = 'latent.0.attn.qkv.weight'
    assert forced.arch == 'generic' and not torch.equal(sliced[qkv], ruled[qkv])


@pytest.mark.parametrize('teacher, student, generic, message', [
    (lambda: restormer(8), lambda: restormer(4, inp_channels=1, out_channels=1), False,
     r"input channels differ: the student's patch_embed\.proj\.weight \(4, 1, 3, 3\) reads 1 input channel, the "
     r"teacher's \(8, 3, 3, 3\) reads 3 input channels"),
    (lambda: restormer(8, inp_channels=6, dual_pixel_task=True), lambda: restormer(4, dual_pixel_task=True), False,
     r"patch_embed\.proj\.weight \(4, 3, 3, 3\) reads 3 input channels, the teacher's \(8, 6, 3, 3\) reads 6"),
    (lambda: edsr(8), lambda: EDSR(1, 1, num_feat=4, num_block=2, upscale=2, img_range=1.0), False,
     r"conv_first\.weight \(4, 1, 3, 3\) reads 1 input channel, the teacher's \(8, 3, 3, 3\) reads 3"),
    (lambda: TinyNet(8, 2), lambda: TinyNet(4, 2, in_ch=1), True,
     r"head\.weight \(4, 1, 3, 3\) reads 1 input channel, the teacher's \(8, 3, 3, 3\) reads 3"),
], ids=['Restormer-gray', 'Restormer-dual-pixel', 'EDSR-gray', 'generic-gray'])
def test_input_channels_that_differ_are_refused_not_sliced(teacher, student, generic, message):
    with pytest.raises(OptionError, match=message):
        select_weights(teacher().state_dict(), student(), generic=generic)


# --------------------------------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('teacher, student, message', [
    (lambda: edsr(8), lambda: restormer(4), r"stage 'encoder_level1' has no counterpart in the teacher"),
    (lambda: TinyNet(8, 2), lambda: edsr(4, 2), r'conv_first\.weight has no counterpart in the teacher'),
    (lambda: restormer(4), lambda: restormer(8), r'patch_embed\.proj\.weight \(8, 3, 3, 3\) .* wider in the student'),
    (lambda: rrdbnet(4, 4), lambda: rrdbnet(4, 8), r'body\.0\.rdb1\.conv1\.weight .* wider in the student'),
    (lambda: restormer(4, (1, 2, 1, 1)), lambda: restormer(4, (1, 3, 1, 1)),
     r"'encoder_level2' has 3 blocks, the teacher's 'encoder_level2' only 2"),
    (lambda: restormer(8, heads=(1, 2, 2, 2)), lambda: restormer(8, heads=(1, 2, 2, 4)),
     r'latent\.0\.attn\.temperature .* 4 attention heads, the teacher 2'),
    (lambda: swinir(12, heads=(4, 4)), lambda: swinir(12, heads=(2, 2)),
     r'blocks\.0\.attn\.qkv\.weight .* a student head has 6 channels, a teacher head 3'),
])
def test_what_cannot_be_mapped_is_refused_by_name(teacher, student, message):
    with pytest.raises(OptionError, match=message):
        select_weights(teacher().state_dict(), student())


def test_a_student_with_fewer_heads_keeps_the_leading_heads():
    teacher = randomised(swinir(12, heads=(4, 4)))
    state, _ = select_weights(teacher.state_dict(), swinir(6, heads=(2, 2)))
    table = 'layers.0.residual_group.blocks.0.attn.relative_position_bias_table'
    assert torch.equal(state[table], teacher.state_dict()[table][:, :2])
    qkv = teacher.state_dict()['layers.0.residual_group.blocks.0.attn.qkv.weight']  # [q|k|v] x 4 heads x 3
    rows = [part * 12 + head * 3 + c for part in range(3) for head in range(2) for c in range(3)]
    assert torch.equal(state['layers.0.residual_group.blocks.0.attn.qkv.weight'], qkv[rows, :6])


def test_strict_refuses_teacher_tensors_without_a_place():
    teacher = restormer(4, dual_pixel_task=True).state_dict()
    _, report = select_weights(teacher, restormer(4))
    assert report.unused == ['skip_conv.weight']
    with pytest.raises(OptionError, match=r'skip_conv\.weight of the teacher has no place in the student'):
        select_weights(teacher, restormer(4), strict=True)


# --------------------------------------------------------------------------------------------------------------
# basicsr shrink
# --------------------------------------------------------------------------------------------------------------
STUDENT_OPT = {
    'type': 'Restormer',
    'dim': 4,
    'num_blocks': [1, 1, 1, 1],
    'num_refinement_blocks': 1,
    'heads': [1, 2, 2, 4],
    'ffn_expansion_factor': 2.0
}


@pytest.fixture
def shrink_files(tmp_path):
    opt = tmp_path / 'student.yml'
    opt.write_text(yaml.safe_dump({'name': 'student', 'network_g': STUDENT_OPT}))
    teacher = tmp_path / 'teacher.pth'
    torch.save({'params_ema': randomised(restormer(8, (2, 2, 2, 2), 2)).state_dict()}, teacher)
    return opt, teacher, tmp_path / 'student.pth'


def test_shrink_writes_a_checkpoint_the_student_loads_strictly(shrink_files, capsys):
    from basicsr.archs import build_network

    opt, teacher, out = shrink_files
    assert shrink_main(['-opt',
                        str(opt), '--teacher',
                        str(teacher), '--param_key', 'params_ema', '--out',
                        str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the teacher's" in printed and 'encoder_level1: teacher blocks [0] of 2' in printed
    checkpoint = torch.load(out, weights_only=True)
    assert list(checkpoint) == ['params']
    build_network(dict(STUDENT_OPT)).load_state_dict(checkpoint['params'], strict=True)


@pytest.mark.parametrize('change, message', [
    (lambda out, teacher: out.write_bytes(b'keep me'), 'exists; remove it'),
    (lambda out, teacher: teacher.unlink(), 'no such file'),
    (lambda out, teacher: None, "no --param_key 'params' in the file; it has \\['params_ema'\\]"),
])
def test_shrink_refuses_with_a_message(shrink_files, capsys, change, message):
    opt, teacher, out = shrink_files
    change(out, teacher)
    assert shrink_main(['-opt', str(opt), '--teacher', str(teacher), '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not out.exists() or out.read_bytes() == b'keep me'


def test_shrink_generic_reaches_the_leading_slice_for_a_network_without_rules(tmp_path, capsys):
    opt = tmp_path / 'student.yml'
    student_opt = {'type': 'MSRResNet', 'num_feat': 4, 'num_block': 1, 'upscale': 2}
    opt.write_text(yaml.safe_dump({'name': 'student', 'network_g': student_opt}))
    teacher = randomised(MSRResNet(num_feat=8, num_block=2, upscale=2)).state_dict()
    torch.save({'params': teacher}, tmp_path / 'teacher.pth')
    out = tmp_path / 'student.pth'
    argv = ['-opt', str(opt), '--teacher', str(tmp_path / 'teacher.pth'), '--out', str(out)]
    assert shrink_main(argv) == 2
    err = capsys.readouterr().err
    assert 'no weight-selection rules for MSRResNet' in err and '`basicsr shrink --generic`' in err
    assert not out.exists()
    assert shrink_main(argv + ['--generic']) == 0
    printed = capsys.readouterr().out
    assert 'generic student:' in printed and 'body: teacher blocks [0] of 2' in printed
    params = torch.load(out, weights_only=True)['params']
    assert torch.equal(params['conv_first.weight'], teacher['conv_first.weight'][:4])
    assert torch.equal(params['body.0.conv1.weight'], teacher['body.0.conv1.weight'][:4, :4])
    assert torch.equal(params['upconv1.weight'], teacher['upconv1.weight'][:16, :4])  # 4 x 2^2 before the shuffle
    assert torch.equal(params['conv_last.weight'], teacher['conv_last.weight'][:, :4])


def test_swinir_upsamplers_of_different_kinds_keep_the_students_own():
    """A classical (pixelshuffle) teacher and a lightweight (pixelshuffledirect) student both have upsample.0, with
    other roles: the student's stays as initialised; everything else still comes from the teacher."""
    teacher = randomised(swinir(12, upscale=2, upsampler='pixelshuffle'))
    student = swinir(6, upscale=2, upsampler='pixelshuffledirect')
    own = {name: t.clone() for name, t in student.state_dict().items()}
    state, report = select_weights(teacher.state_dict(), student)
    assert report.own == ['upsample.0.weight', 'upsample.0.bias']
    assert "kept the student's own initialisation" in '\n'.join(report.lines())
    assert all(torch.equal(state[name], own[name]) for name in report.own)
    assert torch.equal(state['conv_first.weight'], teacher.state_dict()['conv_first.weight'][:6])
    assert report.filled == report.total - sum(own[name].numel() for name in report.own)
    # the same kind of upsampler on both sides is selected as before
    _, same = select_weights(teacher.state_dict(), swinir(6, upscale=2, upsampler='pixelshuffle'))
    assert same.own == []


def test_edsr_residual_scale_of_the_teacher_is_matched_when_the_teacher_is_given():
    """EDSR-L scales each residual branch by 0.1, EDSR-M by 1: a student of the teacher's width and depth then
    computes exactly the teacher; from the state dict alone (no net) it cannot, and nothing is rescaled."""
    torch.manual_seed(0)
    teacher = randomised(EDSR(3, 3, num_feat=8, num_block=2, upscale=2, img_range=1.0, res_scale=0.1)).eval()
    student = EDSR(3, 3, num_feat=8, num_block=2, upscale=2, img_range=1.0, res_scale=1).eval()
    x = torch.rand(1, 3, 8, 8)
    state, report = select_weights(teacher.state_dict(), student, teacher_net=teacher)
    assert report.rescaled == ['body.0', 'body.1'] and 'rescaled' in '\n'.join(report.lines())
    student.load_state_dict(state)
    with torch.no_grad():
        assert torch.allclose(student(x), teacher(x), rtol=1e-5, atol=1e-5)
        state, report = select_weights(teacher.state_dict(), student)
        student.load_state_dict(state)
        assert report.rescaled == [] and not torch.allclose(student(x), teacher(x), atol=1e-3)
