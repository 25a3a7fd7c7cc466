"""The ``basicsr`` command: BasicSR's train and test pipelines with this plugin registered, plus tools.

Each subcommand lives in its own module with a ``main(argv)`` function, imported only when it is run, so that
``basicsr --help`` stays fast.
"""
import importlib
import os
import sys

COMMANDS = {
    'train': ('skd_basicsr.train', 'train with BasicSR\'s train_pipeline (flags as BasicSR: -opt, --launcher, '
              '--auto_resume, --debug, --local_rank, --force_yml)'),
    'test': ('skd_basicsr.test', 'test with BasicSR\'s test_pipeline (same flags)'),
    'flops': ('skd_basicsr.tools.flops', 'params, MACs (thop) and CPU latency of network_g and network_t'),
    'demo': ('skd_basicsr.tools.demo', 'offline end-to-end proof on real photos: teacher, scratch, output-KD, SKD'),
    'patches': ('skd_basicsr.tools.patch_images', 'cut training images into overlapping patches as Restormer\'s '
                'preparation does (DFWB: 512, overlap 96, images over 800)'),
    'lmdb': ('skd_basicsr.tools.lmdb', 'pack an image folder into a BasicSR LMDB (meta_info.txt), checking names'),
    'distill': ('skd_basicsr.tools.distill', 'an SKD option file from a BasicSR training file and its weights, the '
                'student chosen for a cost target (--params, --macs, --latency R) or given'),
    'shrink': ('skd_basicsr.tools.shrink', 'initialise a smaller network_g from a teacher checkpoint (weight '
               'selection)'),
    'infer': ('skd_basicsr.tools.infer', 'restore an image, folder or glob with any BasicSR network (tiled; PyTorch or '
              '--onnx)'),
    'export': ('skd_basicsr.tools.export', 'write a network as ONNX (dynamic H/W), checked against PyTorch with '
               'onnxruntime'),
}

USAGE = 'usage: basicsr {' + ','.join(COMMANDS) + '} ...'


def run_pipeline(pipeline, prog, argv=None):
    """Run a BasicSR pipeline (which reads ``sys.argv``) with the current directory as root path.

    Errors are reported as by every subcommand (:func:`skd_basicsr.tools.guarded`): errors in the options end
    the process with a one-line message and exit status 2, before anything is trained; a loss that became
    non-finite with its message and status 1.

    Returns:
        int: The exit status.
    """
    from skd_basicsr.platform.options import argv_for_basicsr
    from skd_basicsr.tools import guarded

    argv = sys.argv[1:] if argv is None else list(argv)
    with argv_for_basicsr([prog] + argv):
        status = guarded(prog, pipeline, os.getcwd())
    close_distributed(status)
    return status


def close_distributed(status):
    """End a distributed run in step: after a pipeline that succeeded every rank waits for the others (the last
    validation runs on each rank for its own time), then the process group is destroyed. A rank that exits while
    another still talks to it aborts in gloo's threads ("terminate called without an active exception")."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if status == 0:
        dist.barrier()
    dist.destroy_process_group()


def print_help(stream=None):
    """The command's help, on ``stream`` (sys.stdout as it is when called, not when this module was imported)."""
    lines = [USAGE, '', 'Soft Knowledge Distillation for BasicSR (skd_basicsr).', '', 'commands:']
    lines += [f'  {name:<8}{text}' for name, (_, text) in COMMANDS.items()]
    lines += ['', 'Run `basicsr COMMAND -h` for the options of a command.']
    print('\n'.join(lines), file=stream or sys.stdout)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ('-h', '--help'):
        print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f'basicsr: error: unknown command {command!r}; choose from {", ".join(COMMANDS)}.', file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest) or 0


if __name__ == '__main__':
    sys.exit(main())
