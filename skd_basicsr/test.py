"""``python -m skd_basicsr.test -opt FILE``: BasicSR's test pipeline with the plugin registered."""
import sys

import skd_basicsr  # noqa: F401  (compat + registries)
from basicsr.test import test_pipeline


def main(argv=None):
    """Test with BasicSR's own pipeline; results/ is created in the current directory."""
    from skd_basicsr.cli import run_pipeline
    return run_pipeline(test_pipeline, 'basicsr test', argv)


if __name__ == '__main__':
    sys.exit(main())
