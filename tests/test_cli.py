"""The ``basicsr`` command runs BasicSR's own pipelines: plain BasicSR configs train, resume and test through it."""
import os
import shutil
import subprocess

import pytest
import torch

from skd_basicsr import cli

from helpers import ridnet_options, run_cli, write_noisy_pairs, write_options


def test_help(capsys):
    """In this process: the command itself is run as a subprocess by the tests below."""
    assert cli.main(['--help']) == 0
    out = capsys.readouterr().out
    assert 'train' in out and 'test' in out and 'patches' in out
    with pytest.raises(SystemExit) as exit_:
        cli.main(['train', '-h'])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ('-opt', '--launcher', '--auto_resume', '--debug', '--local_rank', '--force_yml'):
        assert flag in out
    assert cli.main(['frobnicate']) == 2 and "unknown command 'frobnicate'" in capsys.readouterr().err


def test_option_file_with_python_tag_runs_nothing(tmp_path):
    marker = tmp_path / 'pwned'
    (tmp_path / 'evil.yml').write_text(f'name: evil\nx: !!python/object/apply:os.system ["touch {marker}"]\n')
    proc = run_cli(['train', '-opt', 'evil.yml'], cwd=tmp_path)
    assert proc.returncode == 2
    assert 'evil.yml, line 2' in proc.stderr and '!!python' in proc.stderr and 'Traceback' not in proc.stderr
    assert not marker.exists() and not (tmp_path / 'experiments').exists()


def test_plain_srmodel_trains_resumes_and_tests_on_cpu(tmp_path):
    gt, lq = write_noisy_pairs(str(tmp_path / 'data'))
    write_options(tmp_path / 'ridnet.yml', ridnet_options('tiny_RIDNet', gt, lq, total_iter=4))

    first = run_cli(['train', '-opt', 'ridnet.yml'], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    exp = tmp_path / 'experiments' / 'tiny_RIDNet'
    assert sorted(os.listdir(exp / 'training_states')) == ['2.state', '4.state']
    assert (exp / 'models' / 'net_g_latest.pth').is_file()
    saved = torch.load(exp / 'models' / 'net_g_4.pth', weights_only=True)['params']

    second = run_cli(['train', '-opt', 'ridnet.yml', '--auto_resume', '--force_yml', 'train:total_iter=6'],
                     cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert 'Resuming training from epoch: 1, iter: 4.' in log
    assert 'iter:       5' in log and 'iter:       6' in log and 'iter:       1,' not in log
    assert (exp / 'training_states' / '6.state').is_file()
    after = torch.load(exp / 'models' / 'net_g_6.pth', weights_only=True)['params']
    assert any(not torch.equal(saved[k], after[k]) for k in saved)

    test_opt = ridnet_options('tiny_RIDNet_test', gt, lq)
    test_opt['datasets'] = {'test_1': test_opt['datasets']['val']}
    test_opt['path'] = {'pretrain_network_g': str(exp / 'models' / 'net_g_6.pth'), 'strict_load_g': True}
    write_options(tmp_path / 'test.yml', test_opt)
    tested = run_cli(['test', '-opt', 'test.yml'], cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert (tmp_path / 'results' / 'tiny_RIDNet_test').is_dir() and '# psnr:' in tested.stdout + tested.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('torchrun') is None, reason='torchrun comes with torch')
def test_torchrun_two_cpu_processes(tmp_path):
    gt, lq = write_noisy_pairs(str(tmp_path / 'data'))
    write_options(tmp_path / 'ddp.yml', ridnet_options('tiny_RIDNet_ddp', gt, lq, total_iter=3, checkpoint_freq=3))
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(['torchrun', '--nproc_per_node=2', '--master_port=29613', '-m', 'skd_basicsr.train',
                           '-opt', 'ddp.yml', '--launcher', 'pytorch'], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert 'World size (gpu number): 2' in log and 'iter:       3' in log
    assert (tmp_path / 'experiments' / 'tiny_RIDNet_ddp' / 'models' / 'net_g_3.pth').is_file()
