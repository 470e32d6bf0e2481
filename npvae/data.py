"""Data sets of Kingma & Welling (2013): MNIST (grey and binarized) and Frey Face.

Every file is identified by a published checksum before it is used; a file that
does not match is never used (ChecksumError), and nothing is unpickled unless its
checksum is known. Files are looked for, in order:

1. the `path` argument (a directory holding the files, or for single-file sets
   the file itself);
2. the directory in ``$NPVAE_DATA_DIR``;
3. the cache directory, ``$NPVAE_CACHE_DIR`` if set, else ``~/.cache/npvae``.

When a file is in none of them and ``download=True``, it is fetched (standard
library only) from the locations in `REGISTRY` into the cache directory, through
a temporary file that only gets its final name once its checksum has been verified.

All images are returned as rows of a C-contiguous float matrix ``(n, D)``, pixel
values ``k / 256`` for grey levels ``k`` in 0..255 (as the authors' code did), so a
grey image lies in ``[0, 1)``; binarized images are exactly 0 or 1.
"""
from __future__ import annotations

import codecs
import dataclasses
import gzip
import hashlib
import http.client
import io
import os
import pathlib
import pickle
import struct
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .fileio import atomic_path

__all__ = [
    "DataNotFoundError",
    "ChecksumError",
    "Split",
    "Dataset",
    "Source",
    "REGISTRY",
    "load_mnist",
    "load_binarized_mnist",
    "load_frey_face",
    "binarize",
    "find_file",
    "parse_amat",
    "split_indices",
]


# --------------------------------------------------------------------------- errors


class DataNotFoundError(FileNotFoundError):
    """A data file is nowhere to be found and could not be downloaded.

    The message names the file, every place looked, and how to provide it.
    """


class ChecksumError(ValueError):
    """A data file does not match any of its known checksums (or none is known).

    Attributes: `name` (file name), `path` (where it was), `expected` (accepted
    'algo:hex' digests), `actual` (dict algo -> hex digest of the file).
    """

    def __init__(self, message, name=None, path=None, expected=(), actual=None):
        super().__init__(message)
        self.name = name
        self.path = path
        self.expected = tuple(expected)
        self.actual = dict(actual or {})


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True, eq=False)  # eq=False: == on arrays has no single truth value
class Split:
    """One split of a data set.

    x: (n, D) float array, C-contiguous, one flattened image per row.
    y: (n,) int64 class labels, or None for unlabelled data.
    """

    x: np.ndarray
    y: Optional[np.ndarray] = None

    def __post_init__(self):
        x, y = self.x, self.y
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise ValueError(f"Split.x must be a 2-D array (n, D), got {_describe(x)}")
        if x.dtype.kind != "f":
            raise ValueError(f"Split.x must be floating point, got dtype {x.dtype}")
        if not x.flags.c_contiguous:
            raise ValueError("Split.x must be C-contiguous")
        if y is not None:
            if not isinstance(y, np.ndarray) or y.shape != (x.shape[0],):
                raise ValueError(f"Split.y must have shape ({x.shape[0]},), got {_describe(y)}")
            if y.dtype != np.int64:
                raise ValueError(f"Split.y must be int64, got dtype {y.dtype}")

    def __len__(self):
        return self.x.shape[0]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named data set: train / optional valid / test splits and the image shape.

    image_shape: (rows, cols) with rows * cols == D, e.g. (28, 28) or (28, 20).
    """

    name: str
    train: Split
    valid: Optional[Split]
    test: Split
    image_shape: tuple

    def __post_init__(self):
        size = int(np.prod(self.image_shape))
        for label, split in (("train", self.train), ("valid", self.valid), ("test", self.test)):
            if split is None and label == "valid":
                continue
            if not isinstance(split, Split):
                raise ValueError(f"Dataset.{label} must be a Split, got {type(split).__name__}")
            if split.x.shape[1] != size:
                raise ValueError(
                    f"Dataset {self.name!r}: {label} rows have {split.x.shape[1]} values, "
                    f"but image_shape {self.image_shape} has {size}"
                )


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"array of shape {a.shape} and dtype {a.dtype}"
    return type(a).__name__


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Source:
    """Where a file can be downloaded from and which digests identify a good copy.

    urls: tried in order (may be empty: such a file is never downloaded).
    checksums: 'sha256:<hex>' or 'md5:<hex>'; a file matching ANY of them is accepted.
    """

    urls: Tuple[str, ...]
    checksums: Tuple[str, ...]


_MNIST_MIRRORS = (
    # The mirrors torchvision (ossci) and TensorFlow Datasets (cvdf) download from;
    # LeCun's own page last, as it often refuses scripted downloads.
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_LAROCHELLE = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"


def _mnist_gz(name: str, sha256: str, md5: str) -> Source:
    return Source(tuple(m + name for m in _MNIST_MIRRORS), (f"sha256:{sha256}", f"md5:{md5}"))


# filename -> Source. Tests point `urls` at a local server by patching this dict.
# Where each published value comes from is noted above each entry.
REGISTRY: Dict[str, Source] = {
    # mnist.pkl.gz, two known versions. The sha256 is that of the project's shared copy
    # (data README / SHA256SUMS); its MD5 98100ca2... equals the one borgwang/tinynn lists
    # for mnielsen/neural-networks-and-deep-learning data/mnist.pkl.gz (first URL).
    # md5 a02cd19f... is the classic deeplearning.net file, as listed by borgwang/tinynn
    # (earlier versions of tinynn/utils/dataset.py) and several of its forks.
    "mnist.pkl.gz": Source(
        (
            "https://raw.githubusercontent.com/mnielsen/neural-networks-and-deep-learning/master/data/mnist.pkl.gz",
            "http://deeplearning.net/data/mnist/mnist.pkl.gz",
        ),
        (
            "sha256:f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
            "md5:98100ca27dc0e07ddd9f822cf9d244db",
            "md5:a02cd19f81d51c426d7ca14024243ce9",
        ),
    ),
    # Original MNIST idx files. sha256: tensorflow/datasets url_checksums/mnist.txt;
    # md5: torchvision/datasets/mnist.py (MNIST.resources).
    "train-images-idx3-ubyte.gz": _mnist_gz(
        "train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ),
    "train-labels-idx1-ubyte.gz": _mnist_gz(
        "train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "d53e105ee54ea40749a09fcbcd1e9432",
    ),
    "t10k-images-idx3-ubyte.gz": _mnist_gz(
        "t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "9fb629c4189551a2d022fa330f9573f3",
    ),
    "t10k-labels-idx1-ubyte.gz": _mnist_gz(
        "t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
    # The same files gunzipped (never downloaded: we fetch the .gz). No maintainer
    # publishes these; the sha256 values are the ones several independent public
    # projects pin for the decompressed files (together with the .gz sums above).
    "train-images-idx3-ubyte": Source(
        (), ("sha256:ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",)
    ),
    "train-labels-idx1-ubyte": Source(
        (), ("sha256:65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",)
    ),
    "t10k-images-idx3-ubyte": Source(
        (), ("sha256:0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",)
    ),
    "t10k-labels-idx1-ubyte": Source(
        (), ("sha256:ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",)
    ),
    # Larochelle's binarized MNIST: sha256 from tensorflow/datasets
    # url_checksums/binarized_mnist.txt (also the shared copy's SHA256SUMS).
    "binarized_mnist_train.amat": Source(
        (_LAROCHELLE + "binarized_mnist_train.amat",),
        ("sha256:ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",),
    ),
    "binarized_mnist_valid.amat": Source(
        (_LAROCHELLE + "binarized_mnist_valid.amat",),
        ("sha256:1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",),
    ),
    "binarized_mnist_test.amat": Source(
        (_LAROCHELLE + "binarized_mnist_test.amat",),
        ("sha256:e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",),
    ),
    # Frey Face: Roweis's original file. sha256 from the data README (shared copy);
    # md5 5aeb024d... is what a public third-party loader expects for Roweis's URL.
    # Second URL: the byte-identical copy in SheffieldML/GPmat, pinned to a commit.
    "frey_rawface.mat": Source(
        (
            "https://cs.nyu.edu/~roweis/data/frey_rawface.mat",
            ("https://raw.githubusercontent.com/SheffieldML/GPmat/"
             "4b5914a38ecbad9fb7a13a3392970bfc28c9d911/datasets/data/frey_rawface.mat"),
        ),
        (
            "sha256:265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64",
            "md5:5aeb024d42b8a6091f30e5eb18c8a48d",
        ),
    ),
}

DOWNLOAD_TIMEOUT = 60.0  # seconds of silence (connect or read) before a download is abandoned
_CHUNK = 1 << 20
_HASHES = ("sha256", "md5")


# --------------------------------------------------------------------------- checksums


def _parse_checksum(spec: str) -> Tuple[str, str]:
    algo, sep, hexdigest = spec.partition(":")
    algo = algo.strip().lower()
    if not sep or algo not in _HASHES or not hexdigest:
        raise ValueError(f"bad checksum spec {spec!r}: expected 'sha256:<hex>' or 'md5:<hex>'")
    return algo, hexdigest.strip().lower()


def _source(name: str) -> Source:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown data file {name!r}; known files: {', '.join(sorted(REGISTRY))}") from None


def _new_hashers(source: Source) -> Dict[str, object]:
    algos = sorted({_parse_checksum(c)[0] for c in source.checksums})
    return {a: hashlib.new(a) for a in algos}


def _digests_of_bytes(raw: bytes, source: Source) -> Dict[str, str]:
    hashers = _new_hashers(source)
    for h in hashers.values():
        h.update(raw)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _digests_of_file(path: pathlib.Path, source: Source) -> Dict[str, str]:
    hashers = _new_hashers(source)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _check_digests(name: str, where, actual: Dict[str, str], source: Source) -> None:
    """Raise ChecksumError unless one of `actual` matches one of the known checksums."""
    expected = [_parse_checksum(c) for c in source.checksums]
    if any(actual.get(algo) == hexdigest for algo, hexdigest in expected):
        return
    got = ", ".join(f"{a}:{h}" for a, h in sorted(actual.items())) or "(nothing computed)"
    want = ", ".join(f"{a}:{h}" for a, h in expected) or "(no checksum is known for this file)"
    raise ChecksumError(
        f"{name!r} at {where} failed its checksum; refusing to use it.\n"
        f"  actual:   {got}\n"
        f"  expected one of: {want}\n"
        f"The file is corrupt, truncated, or not the published version. Delete it and "
        f"provide a good copy: {_how_to_provide(name)}",
        name=name,
        path=str(where),
        expected=source.checksums,
        actual=actual,
    )


def _verify_file(path: pathlib.Path, name: str) -> None:
    source = _source(name)
    _check_digests(name, path, _digests_of_file(path, source), source)


def _verify_bytes(raw: bytes, name: str, where) -> None:
    source = _source(name)
    _check_digests(name, where, _digests_of_bytes(raw, source), source)


# --------------------------------------------------------------------------- lookup


def _cache_dir() -> pathlib.Path:
    env = os.environ.get("NPVAE_CACHE_DIR")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "npvae"


def _places(path) -> List[Tuple[str, pathlib.Path]]:
    """The places to look, in order, as (label, directory-or-file) pairs."""
    places = []
    if path is not None:
        places.append(("path argument", pathlib.Path(path).expanduser()))
    env = os.environ.get("NPVAE_DATA_DIR")
    if env:
        places.append(("$NPVAE_DATA_DIR", pathlib.Path(env).expanduser()))
    places.append(("cache directory", _cache_dir()))
    return places


def data_folders(path=None) -> List[str]:
    """The folders searched for data files, in order: `path`, $NPVAE_DATA_DIR, the cache directory."""
    return list(dict.fromkeys(str(place) for _, place in _places(path)))


def _candidate(label: str, place: pathlib.Path, name: str, allow_file: bool) -> pathlib.Path:
    """Where `name` would be in `place`: inside it, or, for the explicit path argument of
    a single-file set (allow_file) that is not a directory, the path itself."""
    if allow_file and label == "path argument" and not place.is_dir():
        return place
    return place / name


def _search(name: str, path, allow_file: bool = True) -> Optional[pathlib.Path]:
    """First existing candidate for `name`, unverified, or None."""
    for label, place in _places(path):
        cand = _candidate(label, place, name, allow_file)
        if cand.is_file():
            return cand
    return None


def _looked_in(names: Sequence[str], path, allow_file: bool = True) -> str:
    lines = []
    for label, place in _places(path):
        for name in names:
            lines.append(f"  - {_candidate(label, place, name, allow_file)}  ({label})")
    if not os.environ.get("NPVAE_DATA_DIR"):
        lines.append("  ($NPVAE_DATA_DIR is not set)")
    return "\n".join(lines)


def _how_to_provide(name: str) -> str:
    urls = REGISTRY[name].urls if name in REGISTRY else ()
    how = f"put {name} in a directory and set NPVAE_DATA_DIR to it, or pass path=..."
    if not urls:
        return how + "."
    return (
        f"{how}, or call with download=True to fetch it into the cache directory "
        f"($NPVAE_CACHE_DIR, default ~/.cache/npvae) from {' or '.join(urls)}."
    )


# --------------------------------------------------------------------------- download


class _TruncatedDownload(OSError):
    pass


def _stream_to(url: str, dest: pathlib.Path, timeout: float) -> None:
    """Stream `url` into `dest`; raise if fewer bytes arrive than Content-Length says."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):  # never let urllib open file:// or ftp:// here
        raise ValueError(f"unsupported URL scheme {scheme!r}")
    request = urllib.request.Request(url, headers={"User-Agent": "npvae-data/0.1"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        announced = response.headers.get("Content-Length")
        received = 0
        for chunk in iter(lambda: response.read(_CHUNK), b""):
            out.write(chunk)
            received += len(chunk)
        if announced is not None and announced.strip().isdigit() and received != int(announced):
            raise _TruncatedDownload(f"received {received} of the {int(announced)} bytes announced")


def _download(name: str, path, allow_file: bool) -> pathlib.Path:
    """Fetch `name` into the cache directory, verified, or raise with a full explanation."""
    source = _source(name)
    looked = _looked_in([name], path, allow_file)
    if not source.urls:
        raise DataNotFoundError(
            f"Could not find {name!r}. Looked in:\n{looked}\n"
            f"No download location is known for it. To provide it: {_how_to_provide(name)}"
        )
    cache = _cache_dir()
    dest = cache / name
    failures: List[str] = []
    mismatch: Optional[ChecksumError] = None
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        failures.append(f"cannot create cache directory {cache}: {err}")
    else:
        for url in source.urls:
            try:
                with atomic_path(dest) as tmp:
                    _stream_to(url, tmp, DOWNLOAD_TIMEOUT)
                    _verify_file(tmp, name)
                return dest
            except ChecksumError as err:
                mismatch = err
                got = ", ".join(f"{a}:{h}" for a, h in sorted(err.actual.items()))
                failures.append(
                    f"{url}: the downloaded file failed its checksum: got {got}; "
                    f"expected one of: {', '.join(source.checksums)}"
                )
            except (OSError, http.client.HTTPException, ValueError) as err:
                # URLError/HTTPError/timeouts are OSErrors; IncompleteRead is an HTTPException.
                failures.append(f"{url}: {type(err).__name__}: {err}")
    tried = "\n".join("  - " + f for f in failures)
    message = (
        f"Could not find {name!r}. Looked in:\n{looked}\n"
        f"Download into {cache} failed (nothing was kept):\n{tried}\n"
        f"To provide it: {_how_to_provide(name)}"
    )
    if mismatch is not None:
        raise ChecksumError(
            message, name=name, path=None, expected=source.checksums, actual=mismatch.actual
        )
    raise DataNotFoundError(message)


def find_file(name, path=None, download=True) -> pathlib.Path:
    """Locate data file `name` (a key of REGISTRY), verify it, and return its path.

    Looks in `path` (directory, or the file itself), then $NPVAE_DATA_DIR, then the
    cache directory; the first existing copy must match a known checksum
    (ChecksumError otherwise: a bad copy is never skipped silently). If there is
    none and `download` is true, downloads it into the cache directory.
    Raises DataNotFoundError when it is nowhere and cannot be downloaded.
    """
    _source(name)  # unknown names fail early, with the list of known ones
    found = _search(name, path, allow_file=True)
    if found is not None:
        _verify_file(found, name)
        return found
    if download:
        return _download(name, path, allow_file=True)
    raise DataNotFoundError(
        f"Could not find {name!r}. Looked in:\n{_looked_in([name], path)}\n"
        f"Downloading is disabled (download=False). To provide it: {_how_to_provide(name)}"
    )


def _read_verified(name: str, path, download: bool, allow_file: bool) -> bytes:
    """The verified bytes of `name`. Hashing the very bytes that are then parsed means
    the file cannot change between the check and the use."""
    found = _search(name, path, allow_file)
    if found is None:
        if not download:
            raise DataNotFoundError(
                f"Could not find {name!r}. Looked in:\n{_looked_in([name], path, allow_file)}\n"
                f"Downloading is disabled (download=False). To provide it: {_how_to_provide(name)}"
            )
        found = _download(name, path, allow_file)
    raw = found.read_bytes()
    _verify_bytes(raw, name, found)
    return raw


# --------------------------------------------------------------------------- conversions


def _float_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"dtype must be a floating point type, got {dt}")
    return dt


def _grey_to_float(k: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """uint8 grey levels (n, D) -> k / 256 as a C-contiguous float (n, D) array (exact)."""
    x = np.ascontiguousarray(k).astype(dtype)
    x /= 256  # a power of two: exact in any binary float format
    return x


def _float_to_grey(x: np.ndarray, where: str) -> np.ndarray:
    """Check that every value of x is k/256 for an integer k in 0..255; return k as uint8."""
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise ValueError(f"{where}: expected a float array of pixels, got {_describe(x)}")
    if x.size and not (np.all(np.isfinite(x)) and x.min() >= 0 and x.max() < 1):
        raise ValueError(f"{where}: pixel values outside [0, 1) (min {x.min()}, max {x.max()})")
    k = x * 256  # exact: power of two
    grey = k.astype(np.uint8)
    if not np.array_equal(grey, k):
        raise ValueError(f"{where}: pixel values are not all multiples of 1/256")
    return grey


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """(n,) digit labels -> int64, checked to be in 0..9."""
    if not isinstance(y, np.ndarray) or y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(f"{where}: expected ({n},) integer labels, got {_describe(y)}")
    if n and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{where}: labels outside 0..9 (min {y.min()}, max {y.max()})")
    return y.astype(np.int64)


# --------------------------------------------------------------------------- MNIST

MNIST_PKL = "mnist.pkl.gz"
_MNIST_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
_IDX = (  # (base name, what it holds, n)
    ("train-images-idx3-ubyte", "images", 60_000),
    ("train-labels-idx1-ubyte", "labels", 60_000),
    ("t10k-images-idx3-ubyte", "images", 10_000),
    ("t10k-labels-idx1-ubyte", "labels", 10_000),
)

try:  # numpy >= 2 moved the module; pickles written with numpy 1 still name the old one
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else.

    Defence in depth: the file's checksum has already been verified, but a pickle is
    code, so no global other than these few harmless constructors may be looked up.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol 2 stores bytes under Python 3
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{MNIST_PKL} refers to {module}.{name}; only numpy arrays are allowed"
            ) from None


def _mnist_from_pickle(raw: bytes, dtype: np.dtype) -> Dataset:
    """Verified bytes of mnist.pkl.gz -> Dataset (the pickle holds ((x, y),) * 3)."""
    # Decompressing in one go is ~2x faster than letting the unpickler pull from a GzipFile.
    obj = _NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(raw)), encoding="latin1").load()
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise ValueError(f"{MNIST_PKL}: expected a tuple (train, valid, test), got {type(obj).__name__}")
    splits = {}
    for split, pair in zip(_MNIST_SIZES, obj):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"{MNIST_PKL}: {split} set is not an (x, y) pair")
        x, y = pair
        where = f"{MNIST_PKL} {split} set"
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise ValueError(f"{where}: expected a 2-D image matrix, got {_describe(x)}")
        splits[split] = (_float_to_grey(x, where), _labels(y, x.shape[0], where))
    return _mnist_dataset(splits, dtype)


def _parse_idx(raw: bytes, name: str, ndim: int) -> np.ndarray:
    """Bytes of an unsigned-byte idx file -> uint8 array of the shape its header gives.

    Header: 2 zero bytes, type code 0x08 (unsigned byte), number of dimensions, then
    each dimension as a big-endian uint32; then the data in C order.
    """
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{name}: {len(raw)} bytes is too short for an idx header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 + ndim:
        raise ValueError(
            f"{name}: idx magic number is 0x{magic:08x}, expected 0x{0x0800 + ndim:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + int(np.prod(dims)):
        raise ValueError(
            f"{name}: header says {dims} = {int(np.prod(dims))} bytes of data, "
            f"file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_array(raw: bytes, name: str, kind: str, n: int) -> np.ndarray:
    """Verified bytes of one idx(.gz) file -> (n, 784) uint8 images or (n,) uint8 labels."""
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    if kind == "images":
        a = _parse_idx(raw, name, 3)
        if a.shape != (n, 28, 28):
            raise ValueError(f"{name}: expected images of shape ({n}, 28, 28), got {a.shape}")
        return a.reshape(n, 784)
    a = _parse_idx(raw, name, 1)
    if a.shape != (n,):
        raise ValueError(f"{name}: expected {n} labels, got {a.shape}")
    return a


def _mnist_from_idx(files: Dict[str, Tuple[str, bytes]], dtype: np.dtype) -> Dataset:
    """{base: (actual file name, verified bytes)} of the four idx files -> Dataset.

    train = first 50,000 training images, valid = the last 10,000, test = t10k: the split
    of the classic mnist.pkl.gz.
    """
    arrays = {}
    for base, kind, n in _IDX:
        name, raw = files[base]
        arrays[base] = _idx_array(raw, name, kind, n)
    images, labels = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    n_train = _MNIST_SIZES["train"]
    splits = {
        "train": (images[:n_train], _labels(labels[:n_train], n_train, "train labels")),
        "valid": (images[n_train:], _labels(labels[n_train:], len(labels) - n_train, "valid labels")),
        "test": (
            arrays["t10k-images-idx3-ubyte"],
            _labels(arrays["t10k-labels-idx1-ubyte"], 10_000, "test labels"),
        ),
    }
    return _mnist_dataset(splits, dtype)


def _mnist_dataset(splits: Dict[str, Tuple[np.ndarray, np.ndarray]], dtype: np.dtype) -> Dataset:
    """{split: (uint8 grey (n, 784), int64 labels (n,))} -> checked Dataset of k/256 floats."""
    out = {}
    for split, n in _MNIST_SIZES.items():
        grey, y = splits[split]
        if grey.shape != (n, 784):
            raise ValueError(f"MNIST {split}: expected shape ({n}, 784), got {grey.shape}")
        out[split] = Split(_grey_to_float(grey, dtype), y)
    return Dataset("mnist", out["train"], out["valid"], out["test"], (28, 28))


def _idx_in(place: pathlib.Path) -> Dict[str, pathlib.Path]:
    """The idx files present (unverified) in directory `place`: {base: file}, .gz preferred."""
    found = {}
    for base, _, _ in _IDX:
        for name in (base + ".gz", base):
            if (place / name).is_file():
                found[base] = place / name
                break
    return found


def _find_mnist_local(path):
    """('pkl', Path) or ('idx', {base: Path}) from the first place holding a complete
    set, else (None, partial idx dict). A place holding mnist.pkl.gz wins over a later one."""
    places = _places(path)
    for label, place in places:
        if label == "path argument" and place.is_file():
            return "pkl", place  # an explicit file path means the pickle itself
        if (place / MNIST_PKL).is_file():
            return "pkl", place / MNIST_PKL
        in_place = _idx_in(place)
        if len(in_place) == len(_IDX):
            return "idx", in_place
    # A complete set spread over several places: each file from the first place having it.
    idx = {}
    for _, place in reversed(places):
        idx.update(_idx_in(place))
    return ("idx", idx) if len(idx) == len(_IDX) else (None, idx)


def load_mnist(path=None, download=True, dtype=np.float64) -> Dataset:
    """MNIST, grey levels k/256 in [0, 1), split 50,000 / 10,000 / 10,000, with labels.

    Returns Dataset('mnist') with x of shape (n, 784) in `dtype`, y (n,) int64 and
    image_shape (28, 28). Reads `mnist.pkl.gz` (the classic pickle) or the four original
    idx files (`train-images-idx3-ubyte[.gz]`, ...); both give identical arrays. The
    first place (see find_file) holding a complete set wins. If none is found and
    `download` is true, the idx .gz files are downloaded into the cache directory.
    Raises DataNotFoundError, ChecksumError, or ValueError for malformed contents.
    """
    dtype = _float_dtype(dtype)
    kind, found = _find_mnist_local(path)
    if kind == "pkl":
        raw = found.read_bytes()
        _verify_bytes(raw, MNIST_PKL, found)  # before any unpickling
        return _mnist_from_pickle(raw, dtype)
    if kind is None and not download:
        names = [MNIST_PKL] + [base + "[.gz]" for base, _, _ in _IDX]
        raise DataNotFoundError(
            f"Could not find MNIST: neither {MNIST_PKL} nor the four idx files "
            f"({', '.join(base for base, _, _ in _IDX)}, each optionally gzipped). Looked in:\n"
            f"{_looked_in(names, path, allow_file=False)}\n"
            "Downloading is disabled (download=False). To provide it: put the files in a "
            "directory and set NPVAE_DATA_DIR to it, or pass path=..., or call with "
            "download=True to fetch the idx files into the cache directory ($NPVAE_CACHE_DIR, "
            f"default ~/.cache/npvae) from {_MNIST_MIRRORS[0]}."
        )
    files = {}
    for base, _, _ in _IDX:
        if base in found:
            name = found[base].name  # base or base + ".gz"
            raw = found[base].read_bytes()
            _verify_bytes(raw, name, found[base])
        else:
            name = base + ".gz"
            try:
                raw = _read_verified(name, path, download=True, allow_file=False)
            except DataNotFoundError as err:
                raise DataNotFoundError(
                    f"{err}\n(Alternatively, provide {MNIST_PKL} in one of those places.)"
                ) from err
        files[base] = (name, raw)
    return _mnist_from_idx(files, dtype)


# --------------------------------------------------------------------------- binarized MNIST

_BINARIZED_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}


def parse_amat(raw: bytes, n_cols: int = 784, name: str = "<amat>") -> np.ndarray:
    """Parse Larochelle's .amat text of 0/1 images -> uint8 array (n_rows, n_cols).

    Format, checked byte by byte: every line is `n_cols` values, each the character
    '0' or '1', separated by single spaces, ending in '\\n' (so 2 * n_cols bytes a line).
    Vectorised with np.frombuffer rather than np.loadtxt (about 100x faster); raises
    ValueError naming the first bad line (1-based) and column otherwise.
    """
    line_len = 2 * n_cols
    buf = np.frombuffer(raw, dtype=np.uint8)
    if buf.size == 0:
        raise ValueError(f"{name}: file is empty")
    newlines = np.flatnonzero(buf == ord("\n"))
    n_rows = buf.size // line_len
    regular = (
        buf.size % line_len == 0
        and newlines.size == n_rows
        and np.array_equal(newlines, np.arange(line_len - 1, buf.size, line_len))
    )
    if not regular:
        # Find the first line of the wrong length, for a message a person can act on.
        starts = np.concatenate(([0], newlines + 1))
        ends = np.concatenate((newlines, [buf.size]))
        if buf[-1] == ord("\n"):  # drop the empty "line" after the final newline
            starts, ends = starts[:-1], ends[:-1]
        lengths = ends - starts
        bad = np.flatnonzero(lengths != line_len - 1)
        if bad.size == 0:  # every line is complete, so the last one lacks its newline
            raise ValueError(f"{name}: the last line does not end with a newline (truncated file?)")
        line = int(bad[0])
        hint = " (Windows line endings?)" if b"\r" in raw[starts[line] : ends[line] + 1] else ""
        if line == len(lengths) - 1 and lengths[line] < line_len - 1:
            hint += " (truncated file?)"
        raise ValueError(
            f"{name}: line {line + 1} has {int(lengths[line])} characters, expected "
            f"{line_len - 1} ({n_cols} values '0'/'1' separated by single spaces){hint}"
        )
    rows = buf.reshape(n_rows, line_len)
    seps = rows[:, 1:-1:2]  # the n_cols - 1 separators; the '\n's were checked above
    digits = rows[:, 0::2]
    values = digits - np.uint8(ord("0"))  # characters below '0' wrap around to > 1
    bad_sep = seps != ord(" ")
    bad_val = values > 1
    if bad_sep.any() or bad_val.any():
        r_sep = int(np.argmax(bad_sep.any(axis=1))) if bad_sep.any() else n_rows
        r_val = int(np.argmax(bad_val.any(axis=1))) if bad_val.any() else n_rows
        if r_sep <= r_val:
            col = 2 * int(np.argmax(bad_sep[r_sep])) + 1
            what, row = "a single space", r_sep
        else:
            col = 2 * int(np.argmax(bad_val[r_val]))
            what, row = "'0' or '1'", r_val
        char = bytes([rows[row, col]])
        raise ValueError(f"{name}: line {row + 1}, column {col + 1}: found {char!r}, expected {what}")
    return values


def load_binarized_mnist(path=None, download=True, dtype=np.float64) -> Dataset:
    """Larochelle's statically binarized MNIST: 50,000 / 10,000 / 10,000 images of 0/1.

    Returns Dataset('binarized_mnist') with x (n, 784) in `dtype` holding exactly 0.0 and
    1.0, y None (the files have no labels and are not row-aligned with MNIST), image_shape
    (28, 28). Files binarized_mnist_{train,valid,test}.amat, each SHA-256 verified;
    `path` must be a directory.
    """
    dtype = _float_dtype(dtype)
    if path is not None and pathlib.Path(path).expanduser().is_file():
        raise ValueError(f"path must be a directory holding the three .amat files, got the file {path}")
    splits = {}
    for split, n in _BINARIZED_SIZES.items():
        name = f"binarized_mnist_{split}.amat"
        bits = parse_amat(_read_verified(name, path, download, allow_file=False), 784, name)
        if bits.shape[0] != n:
            raise ValueError(f"{name}: expected {n} images, found {bits.shape[0]}")
        splits[split] = Split(bits.astype(dtype), None)
    return Dataset("binarized_mnist", splits["train"], splits["valid"], splits["test"], (28, 28))


# --------------------------------------------------------------------------- Frey Face

FREY_N, FREY_SHAPE = 1965, (28, 20)
FREY_N_TEST = 465
"""Default number of Frey Face test images. The paper gives no split and the authors'
loader (dpkingma/anglepy, data/freyface.py) returns all 1,965 images; the widely used
reimplementation y0ast/Variational-Autoencoder (run.py) trains on 1,500 and holds out
the other 465. We keep those sizes (about 24% held out) but draw the test images with a
seeded random permutation rather than taking the last frames of the video, so that the
test set covers the whole recording."""


def split_indices(n: int, n_test: int, seed=0) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded random split of range(n) -> (train_idx, test_idx), each sorted, int64.

    test_idx = the first n_test entries of np.random.default_rng(seed).permutation(n),
    train_idx = the rest; together they are a partition of range(n).
    """
    if not (isinstance(n_test, (int, np.integer)) and 0 < n_test < n):
        raise ValueError(f"n_test must be an integer in 1..{n - 1}, got {n_test!r}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def load_frey_face(path=None, download=True, dtype=np.float64, n_test=FREY_N_TEST, seed=0) -> Dataset:
    """Frey Face: 1,965 images of 28 x 20 = 560 grey pixels, as ff.T / 256 in [0, 1).

    Returns Dataset('frey_face') with train (1965 - n_test, 560) and test (n_test, 560),
    rows in the order of the original video within each split, valid None, labels None,
    image_shape (28, 20). The split is split_indices(1965, n_test, seed): reproducible
    for a seed (see FREY_N_TEST for the default size). Reads frey_rawface.mat
    (`path` may be that file or its directory).
    """
    import scipy.io  # deferred: only this loader needs it

    dtype = _float_dtype(dtype)
    train_idx, test_idx = split_indices(FREY_N, n_test, seed)
    raw = _read_verified("frey_rawface.mat", path, download, allow_file=True)
    ff = scipy.io.loadmat(io.BytesIO(raw)).get("ff")
    n_pix = FREY_SHAPE[0] * FREY_SHAPE[1]
    if not isinstance(ff, np.ndarray) or ff.dtype != np.uint8 or ff.shape != (n_pix, FREY_N):
        raise ValueError(
            f"frey_rawface.mat: expected variable 'ff' as uint8 of shape ({n_pix}, {FREY_N}), "
            f"got {_describe(ff)}"
        )
    x = _grey_to_float(ff.T, dtype)  # one image per row
    return Dataset(
        "frey_face", Split(x[train_idx], None), None, Split(x[test_idx], None), FREY_SHAPE
    )


# --------------------------------------------------------------------------- sampling


def binarize(x, rng: np.random.Generator) -> np.ndarray:
    """One Bernoulli(x) sample per entry, in x's dtype: (rng.random(x.shape) < x).

    x: array of probabilities in [0, 1], any shape. Used for dynamic binarization of
    grey MNIST (a fresh sample each epoch).
    """
    x = np.asarray(x)
    # draw in x's precision: float32 uniforms are cheaper, and the fast training step draws the same way
    draw = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    return (rng.random(x.shape, dtype=draw) < x).astype(x.dtype)


# --------------------------------------------------------------------------- training data


def train_set_size(dataset: str, binarize_mode: str = "dynamic", frey_n_test: int = 0) -> int:
    """How many training images a configuration trains on, without loading anything (so that a
    command line can be checked before any data loads)."""
    if dataset == "frey":
        return FREY_N - (frey_n_test or FREY_N_TEST)
    return _BINARIZED_SIZES["train"] if binarize_mode == "static" else 50_000


@dataclass
class TrainingData:
    """What a training run reads.

    train_x: what minibatches are drawn from (grey levels when ``dynamic``: each minibatch is
    re-binarized with the run's generator); train_eval_x: the training set as evaluated (binarized
    once for dynamic); test_x; test_y: labels or None; image_shape: (rows, cols); binary: whether
    every training minibatch is exactly 0/1 (dynamic or static binarization).
    """

    train_x: np.ndarray
    train_eval_x: np.ndarray
    test_x: np.ndarray
    test_y: Optional[np.ndarray]
    image_shape: tuple
    dynamic: bool
    binary: Optional[bool] = None   # None: found out from the data

    def __post_init__(self):
        if self.binary is None:
            self.binary = bool(self.dynamic or np.isin(self.train_x, (0, 1)).all())

    def astype(self, dtype) -> "TrainingData":
        """The same data with float arrays in dtype (itself when they already are).  A run gathers
        its minibatches into its own dtype: converting once spares a cast on every gather."""
        dtype = np.dtype(dtype)
        arrays = ("train_x", "train_eval_x", "test_x")
        if all(getattr(self, a).dtype == dtype for a in arrays):
            return self
        return dataclasses.replace(self, **{a: getattr(self, a).astype(dtype) for a in arrays})


def load_training_data(dataset="mnist", binarize_mode="dynamic", dtype=np.float64, path=None,
                       eval_seed=1234, frey_n_test=0, frey_split_seed=0) -> TrainingData:
    """Load and prepare the data sets that a run names.

    MNIST: binarize_mode "none" (grey levels), "dynamic" (a fresh binarization of every
    minibatch; the evaluation sets binarized once with a generator seeded eval_seed), "fixed"
    (training on that once-binarized training set: a fixed data set in MNIST's own order, with
    labels) or "static" (Larochelle's fixed binarization; no labels: its rows do not align with
    mnist.pkl.gz, and its test set is not in MNIST's order either: its blocks of 1000 differ in
    ink, from 7.6% to 17% of pixels on, so its first 1000 points are not a fair sample).
    Frey Face: ff.T / 256 with the split of ``load_frey_face`` seeded frey_split_seed.
    """
    dtype = np.dtype(dtype)
    if dataset == "frey":
        kw = {"n_test": frey_n_test} if frey_n_test else {}
        ds = load_frey_face(path, dtype=dtype, seed=frey_split_seed, **kw)
        return TrainingData(ds.train.x, ds.train.x, ds.test.x, None, ds.image_shape, False)
    if binarize_mode == "static":
        ds = load_binarized_mnist(path, dtype=dtype)
        return TrainingData(ds.train.x, ds.train.x, ds.test.x, None, ds.image_shape, False)
    ds = load_mnist(path, dtype=dtype)
    if binarize_mode == "none":
        return TrainingData(ds.train.x, ds.train.x, ds.test.x, ds.test.y, ds.image_shape, False)
    eval_rng = np.random.default_rng(eval_seed)
    train_once, test_once = binarize(ds.train.x, eval_rng), binarize(ds.test.x, eval_rng)
    if binarize_mode == "fixed":
        return TrainingData(train_once, train_once, test_once, ds.test.y, ds.image_shape, False)
    return TrainingData(ds.train.x, train_once, test_once, ds.test.y, ds.image_shape, True)


def gather_minibatch(data_x, idx, rng=None, dynamic=False, out=None, uniform=None, is_on=None):
    """Rows idx of data_x, re-binarized with rng when ``dynamic`` (the same draws as ``binarize``).

    Every learner gets its minibatch from here, so all of them see the same data for a seed.
    out, uniform (float, like out) and is_on (bool) are optional buffers of shape (len(idx), D):
    with them nothing new is allocated.  Returns the minibatch (out when given).
    """
    idx = np.asarray(idx)
    if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= len(data_x))):
        raise IndexError(f"need row indices in [0, {len(data_x)}), got shape {idx.shape}")
    if out is None:
        out = np.empty((idx.size, data_x.shape[1]), data_x.dtype)
    # mode="clip" (the indices are checked above): with the default mode="raise", np.take
    # buffers out= and the gather costs 2-3x more
    np.take(data_x, idx, axis=0, out=out, mode="clip")
    if dynamic:
        uniform = np.empty_like(out) if uniform is None else uniform
        is_on = np.empty(out.shape, np.bool_) if is_on is None else is_on
        rng.random(out=uniform, dtype=out.dtype)
        np.less(uniform, out, out=is_on)
        np.copyto(out, is_on)
    return out
