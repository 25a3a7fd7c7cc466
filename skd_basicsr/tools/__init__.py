"""Command-line tools of the basicsr command: one module per subcommand, each with ``main(argv)``, and the
argument parsing and error reporting every subcommand shares (:func:`run_command`, :func:`guarded`)."""
import argparse
import sys

from skd_basicsr.platform.errors import OptionError


def command_parser(prog, doc):
    """The argument parser of a subcommand: its name and the first line of its module's docstring."""
    return argparse.ArgumentParser(prog=prog, description=doc.strip().split('\n')[0])


def guarded(prog, run, *args, usage_errors=(OptionError, )):
    """``run(*args)`` as a subcommand, returning its exit status (None counts as 0).

    A usage error (:class:`OptionError`, or the types in ``usage_errors``) ends it with one line
    ``PROG: error: ...`` on stderr and status 2 instead of a traceback; a loss that became non-finite
    (FloatingPointError) with its message and status 1.
    """
    try:
        return run(*args) or 0
    except usage_errors as err:
        print(f'{prog}: error: {err}', file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f'{prog}: error: {err}', file=sys.stderr)
        return 1


def run_command(parser, run, argv=None, usage_errors=(OptionError, )):
    """Parse ``argv`` with ``parser`` and call ``run(args)`` through :func:`guarded`; the subcommand's ``main``."""
    return guarded(parser.prog, run, parser.parse_args(argv), usage_errors=usage_errors)
