import os
from os import path as osp

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# Tiny tensors gain nothing from a second thread, and OpenMP threads that spin while another process holds the
# cores made one tiny SKD step take 11 s instead of 0.1 s on this shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope='session')
def fixtures_dir():
    """shared/fixtures: $SKD_FIXTURES, else ../shared/fixtures beside the clone (as in CI), else /work/shared."""
    candidates = [os.environ.get('SKD_FIXTURES'), osp.join(REPO, '..', 'shared', 'fixtures'), '/work/shared/fixtures']
    for path in candidates:
        if path and osp.isfile(osp.join(path, 'restormer_reference_tiny.pt')):
            return path
    pytest.fail(f'Reference fixtures not found; looked in {[c for c in candidates if c]}. Set SKD_FIXTURES to the '
                'folder holding restormer_reference_tiny.pt and restormer_official_keys.txt.')
