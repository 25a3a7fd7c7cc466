"""Decoded training images held in memory (``cache_data: true``): each file decoded once per run, not once per patch.

A training set of 512-pixel PNGs read through random crops decodes a whole image for every 48- or 128-pixel patch;
with ``cache_data: true`` this package's datasets decode every image once, when the dataset is built, and crop from
memory. BasicSR builds its training set before the loader starts its workers, so forked workers share the decoded
pages copy-on-write. Nothing writes them: the arrays are read-only, and a crop is converted into a new float array
(:func:`skd_basicsr.platform.data.transforms.to_float`) before BasicSR's in-place flips touch it. Decoding once per
worker instead holds one copy per worker (on the demo's 3.4 MiB of photos, 2 workers: 14.1 MiB of memory of its own
per worker against 9.1 MiB with the pages shared, and the loop no faster: ``benchmarks/bench_data_cache.py``), and
would decode again whenever BasicSR starts its workers anew (every epoch, unless ``persistent_workers``). Under a
``spawn`` or ``forkserver`` start method (Python 3.14's default on Linux) each worker receives its own pickled copy.

The images are held as the file's 8-bit samples (a quarter of float32), the crops and flips are exactly those
without the cache, and the log says how many bytes are held. With DDP every rank holds its own copy.
"""
import time

from skd_basicsr.platform.data.transforms import decode_image
from skd_basicsr.platform.errors import OptionError

# the share of the memory available when decoding starts that the images may take; the rest is left to the
# networks, the loader's workers and their batches
MEMORY_SHARE = 0.5
MIB = 2**20


def available_memory():
    """Bytes of memory available to new allocations (Linux's MemAvailable), or None where /proc/meminfo is absent."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cache_option(opt, dataset):
    """The dataset's ``cache_data`` option (default false), refused unless it is true or false."""
    value = opt.get('cache_data', False)
    if not isinstance(value, bool):
        raise OptionError(f'datasets {opt.get("name", dataset)}: cache_data must be true or false, got {value!r}.')
    return value


class DecodedImages:
    """Every image of a dataset, decoded once and held in memory as read-only 8-bit HWC arrays.

    Args:
        io_backend_opt (dict): BasicSR's ``io_backend`` options with what the dataset added (``db_paths`` and
            ``client_keys`` for an LMDB).
        items (list[tuple[str, str]]): (path or LMDB key, client key 'gt' / 'lq') of every image.
        dataset (str): The dataset's class name, for messages.
        flag (str): 'color' or 'grayscale'. Default: 'color'.

    Attributes:
        nbytes (int): Bytes held by the decoded images.
        seconds (float): Time taken to decode them.

    Raises:
        OptionError: When the images pass :data:`MEMORY_SHARE` of the memory that was available when decoding began.
        ValueError: When an image does not decode (naming its file).
    """

    def __init__(self, io_backend_opt, items, dataset, flag='color'):
        from basicsr.utils import FileClient

        start = time.perf_counter()
        backend = dict(io_backend_opt)
        client = FileClient(backend.pop('type'), **backend)
        available = available_memory()
        limit = None if available is None else MEMORY_SHARE * available
        self.images, self.nbytes = {}, 0
        for count, (path, key) in enumerate(items, 1):
            img = decode_image(client, path, key, dataset, flag)
            img.setflags(write=False)
            self.images[key, path] = img
            self.nbytes += img.nbytes
            if limit is not None and self.nbytes > limit:
                raise OptionError(f'{dataset}: cache_data: {count} of {len(items)} decoded images already '
                                  f'hold {self.nbytes / MIB:.0f} MiB, more than {MEMORY_SHARE:.0%} of the '
                                  f'{available / MIB:.0f} MiB available; set cache_data: false for this set.')
        self.seconds = time.perf_counter() - start

    def __len__(self):
        return len(self.images)

    def get(self, path, key):
        """The decoded image of ``path`` under client key ``key``: uint8 (h, w, c), read-only."""
        return self.images[key, path]


class DecodingDataset:
    """What this package's datasets share for reading: ``decoded(path, key)`` from memory under ``cache_data: true``,
    else from the file through BasicSR's file client (made on first use, in the worker that reads)."""

    def setup_decoding(self, opt, flag='color'):
        """Read ``cache_data`` and, when true, decode every image now (before the loader starts its workers)."""
        self.decode_flag = flag
        self.file_client = None
        self.cache = None
        if cache_option(opt, type(self).__name__):
            self.cache_images()

    def image_items(self):
        """(path or LMDB key, client key) of every image of the dataset."""
        raise NotImplementedError

    def cache_images(self):
        """Decode every image into memory and log what it holds."""
        from basicsr.utils import get_root_logger

        name = type(self).__name__
        self.cache = DecodedImages(self.io_backend_opt, self.image_items(), name, self.decode_flag)
        get_root_logger().info(f'Dataset {self.opt.get("name", name)}: cache_data: {len(self.cache)} images decoded '
                               f'in {self.cache.seconds:.1f} s, {self.cache.nbytes / MIB:.1f} MiB held in memory '
                               f'({self.cache.nbytes} bytes).')

    def decoded(self, path, key):
        """The image of ``path`` as uint8 (h, w, c): from memory, or decoded from the file."""
        if self.cache is not None:
            return self.cache.get(path, key)
        if self.file_client is None:
            from basicsr.utils import FileClient

            backend = dict(self.io_backend_opt)
            self.file_client = FileClient(backend.pop('type'), **backend)
        return decode_image(self.file_client, path, key, type(self).__name__, self.decode_flag)
