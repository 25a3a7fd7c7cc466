"""Runs that die and come back, and runs on two processes: SKD through torchrun, a SIGKILL mid-training and one
mid-save."""
import os
import shutil
import signal
import subprocess
import sys
import time
from os import path as osp

import pytest
import torch

from helpers import ridnet_options, save_teacher, skd_options, tiny_restormer, write_noisy_pairs, write_options

TESTS = osp.dirname(osp.abspath(__file__))


def skd_file(tmp_path, name, **kwargs):
    gt, lq = write_noisy_pairs(str(tmp_path / 'data'), size=32)
    save_teacher(tmp_path / 'teacher.pth', tiny_restormer(16))
    opt = skd_options(name, gt, lq, tmp_path / 'teacher.pth', **kwargs)
    return write_options(tmp_path / f'{name}.yml', opt)


def cli(*args):
    return [sys.executable, '-m', 'skd_basicsr.cli'] + list(args)


ENV = dict(os.environ, OMP_NUM_THREADS='1')

# `basicsr` whose save of iteration 4's training state writes half its bytes, then stalls until it is killed
SLOW_SAVE = '''
import io
import os
import sys
import time

import torch

save = torch.save


def half_then_stall(obj, path, *args, **kwargs):
    name = getattr(path, 'name', path)  # a path, or the open temporary file the atomic save writes through
    if not os.path.basename(str(name)).startswith('4.state.tmp'):
        return save(obj, path, *args, **kwargs)
    buffer = io.BytesIO()
    save(obj, buffer)
    with open(name, 'wb') as f:
        f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    time.sleep(600)


torch.save = half_then_stall
from skd_basicsr.cli import main  # noqa: E402

sys.exit(main())
'''


@pytest.mark.slow
def test_sigkill_mid_training_then_auto_resume_runs_to_the_end(tmp_path):
    skd_file(tmp_path, 'killed', total_iter=60, checkpoint_freq=5)
    states = tmp_path / 'experiments' / 'killed' / 'training_states'
    proc = subprocess.Popen(cli('train', '-opt', 'killed.yml'), cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (states / '10.state').exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (states / '10.state').exists(), 'the run did not reach iteration 10'
    saved = sorted(int(f[:-6]) for f in os.listdir(states) if f.endswith('.state'))
    assert saved[-1] < 60, 'killed too late to test anything'
    for f in os.listdir(states):  # a kill may leave a temporary file, never a truncated .state: every one loads
        if f.endswith('.state'):
            torch.load(states / f, weights_only=True)

    resumed = subprocess.run(cli('train', '-opt', 'killed.yml', '--auto_resume'), cwd=tmp_path, env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert 'Resuming training from epoch: ' in log and f'iter: {saved[-1]}.' in log
    assert f'iter:{saved[-1] + 1:8,d}' in log and 'iter:      60' in log
    assert (tmp_path / 'experiments' / 'killed' / 'models' / 'net_g_60.pth').is_file()


@pytest.mark.slow
def test_sigkill_mid_save_leaves_no_truncated_state_and_the_next_start_cleans_up(tmp_path):
    gt, lq = write_noisy_pairs(str(tmp_path / 'data'))
    write_options(tmp_path / 'saving.yml', ridnet_options('saving', gt, lq, total_iter=6, checkpoint_freq=2))
    (tmp_path / 'slow_save.py').write_text(SLOW_SAVE)
    exp = tmp_path / 'experiments' / 'saving'
    states = exp / 'training_states'
    proc = subprocess.Popen([sys.executable, 'slow_save.py', 'train', '-opt', 'saving.yml'], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    temporary = []
    while time.time() < deadline and proc.poll() is None and not temporary:
        temporary = [f for f in os.listdir(states) if f.startswith('4.state.tmp')] if states.is_dir() else []
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the stalled write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert temporary, 'the run never started the save of iteration 4'
    assert sorted(os.listdir(states)) == ['2.state'] + temporary  # the half-written state never got its name
    torch.load(states / '2.state', weights_only=True)

    resumed = subprocess.run(cli('train', '-opt', 'saving.yml', '--auto_resume'), cwd=tmp_path, env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert 'Removed 1 temporary file(s) of a save that was interrupted' in log
    assert 'Resuming training from epoch: ' in log and 'iter: 2.' in log and 'iter:       6' in log
    assert sorted(os.listdir(states)) == ['2.state', '4.state', '6.state']
    assert not [f for f in os.listdir(exp / 'models') if '.tmp' in f]
    for f in os.listdir(states):
        torch.load(states / f, weights_only=True)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('torchrun') is None, reason='torchrun comes with torch')
def test_skd_on_two_cpu_processes_keeps_replicas_identical(tmp_path):
    out = tmp_path / 'ddp_ok'
    worker = osp.join(TESTS, 'ddp_skd_worker.py')
    proc = subprocess.run(['torchrun', '--nproc_per_node=2', '--master_port=29617', worker, TESTS, str(tmp_path),
                           str(out)], env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_text() == 'ok 2\n'


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('torchrun') is None, reason='torchrun comes with torch')
def test_skd_through_torchrun_cli_saves_and_validates_once(tmp_path):
    skd_file(tmp_path, 'skd_ddp', total_iter=2, checkpoint_freq=2)
    proc = subprocess.run(['torchrun', '--nproc_per_node=2', '--master_port=29619', '-m', 'skd_basicsr.train',
                           '-opt', 'skd_ddp.yml', '--launcher', 'pytorch'], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert 'World size (gpu number): 2' in log and 'l_gk:' in log and 'l_cl:' in log
    assert log.count('Teacher (network_t) on tiny_val') == 1
    models = tmp_path / 'experiments' / 'skd_ddp' / 'models'
    assert sorted(os.listdir(models)) == ['net_g_2.pth', 'net_g_latest.pth']


def run_bounded(args, timeout, **kwargs):
    """Run a command in its own process group; past ``timeout`` stop it (SIGTERM, which torchrun passes on to its
    workers, then SIGKILL of the group) and fail, so that a hang is a failure, not a stuck suite."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        pytest.fail(f'{args[0]} still running after {timeout} s: hung')
    return proc.returncode, out + err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('torchrun') is None, reason='torchrun comes with torch')
@pytest.mark.parametrize('mode, port', [('skip', 29621), ('stop', 29623)])
def test_nan_on_one_rank_skips_or_stops_every_rank_without_hanging(tmp_path, mode, port):
    out = tmp_path / 'seen'
    worker = osp.join(TESTS, 'ddp_nonfinite_worker.py')
    returncode, log = run_bounded(['torchrun', '--nproc_per_node=2', f'--master_port={port}', worker, TESTS,
                                   str(tmp_path), str(out), mode], timeout=150, env=ENV)
    assert returncode == 0, log[-3000:]
    seen = [(tmp_path / f'seen.{rank}').read_text().splitlines() for rank in (0, 1)]
    if mode == 'skip':
        assert seen[0] == seen[1] == ['iter 1 stepped', 'iter 2 skipped', 'iter 3 stepped', 'replicas identical']
    else:
        assert seen[0][1].startswith('stopped at 2: iter 2: the loss term(s) of another rank became non-finite')
        assert seen[1][1].startswith('stopped at 2: iter 2: the loss term(s) l_pix')
        assert [seen[0][0]] + seen[0][2:] == [seen[1][0]] + seen[1][2:] == ['iter 1 stepped', 'replicas identical']


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('torchrun') is None, reason='torchrun comes with torch')
@pytest.mark.parametrize('mode, port', [('grad-skip', 29625), ('grad-stop', 29627), ('save', 29629)])
def test_a_nan_gradient_or_a_refused_save_on_one_rank_ends_every_rank_alike(tmp_path, mode, port):
    out = tmp_path / 'seen'
    worker = osp.join(TESTS, 'ddp_nonfinite_worker.py')
    start = time.time()
    returncode, log = run_bounded(['torchrun', '--nproc_per_node=2', f'--master_port={port}', worker, TESTS,
                                   str(tmp_path), str(out), mode], timeout=150, env=ENV)
    assert returncode == 0, log[-3000:]
    assert time.time() - start < 120  # no rank waited for the other until a timeout
    # each rank runs in its own folder (rank0/, rank1/); beyond that, the same decision and message on both ranks
    seen = [(tmp_path / f'seen.{rank}').read_text().replace(f'/rank{rank}/', '/rankN/').splitlines() for rank in (0, 1)]
    assert seen[0] == seen[1], seen
    if mode == 'grad-skip':
        assert seen[0] == ['iter 1 stepped', 'iter 2 skipped', 'iter 3 stepped',
                           'state holds the random states of 2 ranks', 'replicas identical']
    elif mode == 'grad-stop':
        assert seen[0][0] == 'iter 1 stepped' and seen[0][2] == 'replicas identical'
        assert seen[0][1].startswith('stopped at 2: iter 2: the gradient became non-finite; training stopped before')
    else:
        assert seen[0][0] == 'iter 1 stepped'
        assert seen[0][1].startswith('save refused: Not writing ') and 'on at least one rank; every rank stops' in \
            seen[0][1]
