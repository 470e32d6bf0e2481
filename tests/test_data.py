"""Tests for npvae.data and npvae.fileio.

Real-data tests need NPVAE_DATA_DIR (e.g. /work/shared/data) and are skipped without it.
Everything else is hermetic: files are made here, downloads come from a local HTTP
server on 127.0.0.1, and NPVAE_CACHE_DIR always points into a temporary directory.
"""
import gzip
import hashlib
import http.server
import io
import os
import pickle
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st

from npvae import data
from npvae.fileio import atomic_path, sha256_file

DATA_DIR = os.environ.get("NPVAE_DATA_DIR")


def real_dir(*names):
    """The real data directory, or skip the test saying why."""
    if not DATA_DIR:
        pytest.skip("NPVAE_DATA_DIR is not set: real-data test skipped")
    for name in names:
        if not (Path(DATA_DIR) / name).is_file():
            pytest.skip(f"{name} is not in NPVAE_DATA_DIR={DATA_DIR}: real-data test skipped")
    return Path(DATA_DIR)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own (not yet existing) cache directory: ~/.cache is never touched."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("NPVAE_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def no_data_dir(monkeypatch):
    monkeypatch.delenv("NPVAE_DATA_DIR", raising=False)


def accept(monkeypatch, name, *files_or_bytes, urls=()):
    """Make the registry accept exactly these contents for `name` (and fetch from `urls`)."""
    sums = []
    for f in files_or_bytes:
        digest = hashlib.sha256(f).hexdigest() if isinstance(f, bytes) else sha256_file(f)
        sums.append("sha256:" + digest)
    monkeypatch.setitem(data.REGISTRY, name, data.Source(tuple(urls), tuple(sums)))


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def mnist_real():
    return data.load_mnist(path=real_dir(data.MNIST_PKL), download=False)


@pytest.fixture(scope="module")
def frey_file():
    return real_dir("frey_rawface.mat") / "frey_rawface.mat"


def test_mnist_real_shapes_grid_and_labels(mnist_real):
    d = mnist_real
    assert d.name == "mnist" and d.image_shape == (28, 28)
    for split, n in (("train", 50_000), ("valid", 10_000), ("test", 10_000)):
        s = getattr(d, split)
        assert s.x.shape == (n, 784) and s.x.dtype == np.float64 and s.x.flags.c_contiguous
        assert s.y.shape == (n,) and s.y.dtype == np.int64
        k = s.x * 256
        assert np.array_equal(k, np.round(k)), "values must be exactly k/256"
        assert s.x.min() == 0.0 and s.x.max() == 0.99609375
        assert set(np.unique(s.y)) == set(range(10))
    assert d.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert d.valid.y[:10].tolist() == [3, 8, 6, 9, 6, 4, 5, 3, 8, 4]
    assert d.test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert d.train.x.mean() == pytest.approx(0.13045, abs=5e-5)
    assert d.test.x.mean() == pytest.approx(0.13200, abs=5e-5)


def test_binarized_mnist_real():
    d = data.load_binarized_mnist(
        path=real_dir(*(f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test"))),
        download=False,
        dtype=np.float32,  # half the memory; the values 0 and 1 are exact in any float
    )
    assert d.name == "binarized_mnist" and d.image_shape == (28, 28)
    for split, n in (("train", 50_000), ("valid", 10_000), ("test", 10_000)):
        s = getattr(d, split)
        assert s.x.shape == (n, 784) and s.x.dtype == np.float32 and s.y is None
        assert set(np.unique(s.x).tolist()) == {0.0, 1.0}
    assert d.train.x.mean(dtype=np.float64) == pytest.approx(0.13056, abs=5e-5)


def test_frey_face_real_values_and_partition(frey_file):
    d = data.load_frey_face(path=frey_file.parent, download=False)
    ff = scipy.io.loadmat(frey_file)["ff"]
    full = ff.T / 256.0
    assert d.name == "frey_face" and d.image_shape == (28, 20) and d.valid is None
    assert len(d.train) + len(d.test) == 1965 and d.train.x.shape[1] == 560
    assert len(d.test) == data.FREY_N_TEST and d.train.y is None and d.test.y is None
    for s in (d.train, d.test):
        k = s.x * 256
        assert np.array_equal(k, np.round(k)) and 0 <= s.x.min() and s.x.max() < 1
    train_idx, test_idx = data.split_indices(1965, data.FREY_N_TEST, 0)
    assert np.array_equal(d.train.x, full[train_idx]) and np.array_equal(d.test.x, full[test_idx])
    # Rows, as a multiset, are exactly all 1,965 images.
    both = np.concatenate([d.train.x, d.test.x])
    assert np.array_equal(np.unique(both, axis=0), np.unique(full, axis=0))
    assert both.shape == full.shape


def test_frey_face_real_split_reproducible_and_seeded(frey_file):
    a = data.load_frey_face(path=frey_file, download=False, seed=0)  # path = the file itself
    b = data.load_frey_face(path=frey_file, download=False, seed=0)
    c = data.load_frey_face(path=frey_file, download=False, seed=1)
    assert np.array_equal(a.train.x, b.train.x) and np.array_equal(a.test.x, b.test.x)
    assert not np.array_equal(a.test.x, c.test.x)


def test_a_runs_frey_split_seed_reaches_the_loader(frey_file):
    from npvae.config import ConfigError, TrainConfig
    from npvae.runs import load_run_data
    for seed in (0, 2):
        run = load_run_data(TrainConfig(dataset="frey", frey_split_seed=seed, data_dir=str(frey_file.parent)))
        split = data.load_frey_face(path=frey_file, download=False, seed=seed)
        assert np.array_equal(run.train_x, split.train.x) and np.array_equal(run.test_x, split.test.x)
    with pytest.raises(ConfigError, match="--frey_split_seed must be 0 or more"):
        TrainConfig(dataset="frey", frey_split_seed=-1).validate()


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 3000), st.data())
def test_split_indices_is_a_seeded_partition(n, draw):
    n_test = draw.draw(st.integers(1, n - 1))
    seed = draw.draw(st.integers(0, 2**32 - 1))
    train, test = data.split_indices(n, n_test, seed)
    assert len(test) == n_test and len(train) == n - n_test
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    again = data.split_indices(n, n_test, seed)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)


@pytest.mark.parametrize("n_test", [0, 1965, -3, 2.5])
def test_frey_bad_n_test_is_rejected(n_test):
    with pytest.raises(ValueError, match="n_test"):
        data.load_frey_face(n_test=n_test, download=False)


# --------------------------------------------------------------------------- idx vs pickle


def write_idx(path, a, gz):
    """Write uint8 array `a` as an idx file (gzipped if `gz`)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    payload = header + np.ascontiguousarray(a, dtype=np.uint8).tobytes()
    if gz:
        payload = gzip.compress(payload, compresslevel=1)
    Path(path).write_bytes(payload)


@pytest.fixture
def mnist_reference(request, tmp_path, monkeypatch):
    """(grey uint8 train+valid (60000, 784), labels, test grey, test labels, Dataset from
    a pickle). From the real pickle when available; otherwise from a synthetic pickle
    written here and registered as accepted (protocol 4 and no compression: fast)."""
    if DATA_DIR and (Path(DATA_DIR) / data.MNIST_PKL).is_file():
        d = request.getfixturevalue("mnist_real")
    else:
        rng = np.random.default_rng(0)
        sizes = (50_000, 10_000, 10_000)
        sets = tuple(
            ((rng.integers(0, 256, (n, 784), dtype=np.uint8) / np.float32(256)).astype(np.float32),
             rng.integers(0, 10, n).astype(np.int64))
            for n in sizes
        )
        pkl_dir = tmp_path / "pkl"
        pkl_dir.mkdir()
        pkl = pkl_dir / data.MNIST_PKL
        pkl.write_bytes(gzip.compress(pickle.dumps(sets, protocol=4), compresslevel=0))
        accept(monkeypatch, data.MNIST_PKL, pkl)
        d = data.load_mnist(path=pkl, download=False)
    grey = lambda x: (x * 256).astype(np.uint8)  # noqa: E731
    train_grey = np.concatenate([grey(d.train.x), grey(d.valid.x)])
    train_y = np.concatenate([d.train.y, d.valid.y]).astype(np.uint8)
    return train_grey, train_y, grey(d.test.x), d.test.y.astype(np.uint8), d


def test_idx_files_give_the_same_arrays_as_the_pickle(mnist_reference, tmp_path, monkeypatch, no_data_dir):
    train_grey, train_y, test_grey, test_y, from_pkl = mnist_reference
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    files = {  # both gzipped and plain idx files are read
        "train-images-idx3-ubyte.gz": (train_grey.reshape(-1, 28, 28), True),
        "train-labels-idx1-ubyte.gz": (train_y, True),
        "t10k-images-idx3-ubyte": (test_grey.reshape(-1, 28, 28), False),
        "t10k-labels-idx1-ubyte": (test_y, False),
    }
    for name, (a, gz) in files.items():
        write_idx(idx_dir / name, a, gz)
        accept(monkeypatch, name, idx_dir / name)
    from_idx = data.load_mnist(path=idx_dir, download=False)
    for split in ("train", "valid", "test"):
        a, b = getattr(from_pkl, split), getattr(from_idx, split)
        assert a.x.dtype == b.x.dtype == np.float64
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
        assert b.y.dtype == np.int64 and b.x.flags.c_contiguous


def test_idx_header_is_checked():
    good = struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes([1, 2, 3])
    assert data._parse_idx(good, "labels", 1).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="magic"):
        data._parse_idx(struct.pack(">BBBBI", 0, 0, 8, 3, 3) + bytes(3), "labels", 1)
    with pytest.raises(ValueError, match="magic"):
        data._parse_idx(struct.pack(">BBBBI", 0, 0, 0x0D, 1, 3) + bytes(12), "labels", 1)
    with pytest.raises(ValueError, match="header says"):
        data._parse_idx(good[:-1], "labels", 1)


def test_mnist_not_found_names_everything(tmp_path, cache_dir, no_data_dir):
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_mnist(path=tmp_path / "empty", download=False)
    msg = str(info.value)
    for text in ("mnist.pkl.gz", "train-images-idx3-ubyte", str(tmp_path / "empty"), str(cache_dir),
                 "NPVAE_DATA_DIR", "path="):
        assert text in msg


# --------------------------------------------------------------------------- pickles are not trusted

def _side_effect(path):
    """What a hostile pickle would run: here, just create a marker file."""
    Path(path).write_text("unpickled!")
    return ((np.zeros((1, 784), np.float32), np.zeros(1, np.int64)),) * 3


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_side_effect, (str(self.marker),))


@pytest.fixture
def hostile_pickle(tmp_path):
    d = tmp_path / "hostile"
    d.mkdir()
    marker = tmp_path / "marker"
    (d / data.MNIST_PKL).write_bytes(gzip.compress(pickle.dumps(_Hostile(marker), protocol=2)))
    return d / data.MNIST_PKL, marker


def test_pickle_with_unknown_checksum_is_refused_unread(hostile_pickle, no_data_dir):
    pkl, marker = hostile_pickle
    with pytest.raises(data.ChecksumError) as info:
        data.load_mnist(path=pkl.parent, download=False)
    assert not marker.exists(), "the pickle must never be unpickled"
    assert data.MNIST_PKL in str(info.value) and info.value.actual["sha256"] in str(info.value)
    # ...and the test has teeth: a plain pickle.load would have run the payload.
    pickle.loads(gzip.decompress(pkl.read_bytes()))
    assert marker.exists()


def test_even_an_accepted_pickle_may_only_build_arrays(hostile_pickle, monkeypatch, no_data_dir):
    pkl, marker = hostile_pickle
    accept(monkeypatch, data.MNIST_PKL, pkl)
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        data.load_mnist(path=pkl, download=False)
    assert not marker.exists()


# --------------------------------------------------------------------------- amat parsing


def amat_bytes(bits):
    return b"".join(b" ".join(b"%d" % v for v in row) + b"\n" for row in bits)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1), min_size=5, max_size=5), min_size=1, max_size=20))
def test_parse_amat_roundtrip(rows):
    bits = np.array(rows, dtype=np.uint8)
    assert np.array_equal(data.parse_amat(amat_bytes(bits), n_cols=5), bits)


@pytest.mark.parametrize(
    "text, where",
    [
        (b"0 1 0 1\n1 1\t0 0\n", "line 2, column 4"),  # tab separator
        (b"0 1 0 1\n1 1 2 0\n", "line 2, column 5"),  # value 2
        (b"0 1 0 1\n1 1  0 0\n", "line 2 has 8"),  # double space
        (b"0 1 0 1\n1 1 0\n", "line 2 has 5"),  # too few values (truncated)
        (b"0 1 0 1\r\n1 1 0 0\r\n", "line 1 has 8"),  # Windows line endings
        (b"0 1 0 1\n1 1 0 0", "last line does not end"),  # no final newline
        (b"0 1 0 1\n1 1 0 0\n0 1 0 1 1\n", "line 3 has 9"),  # too many values
        (b"0,1,0,1\n", "line 1, column 2"),
        (b"", "empty"),
    ],
)
def test_malformed_amat_is_a_clear_value_error(text, where):
    with pytest.raises(ValueError, match=where):
        data.parse_amat(text, n_cols=4, name="x.amat")


def test_amat_with_wrong_row_count_is_rejected(tmp_path, monkeypatch, no_data_dir):
    for split in ("train", "valid", "test"):
        name = f"binarized_mnist_{split}.amat"
        (tmp_path / name).write_bytes(amat_bytes(np.zeros((3, 784), np.uint8)))
        accept(monkeypatch, name, tmp_path / name)
    with pytest.raises(ValueError, match="expected 50000 images, found 3"):
        data.load_binarized_mnist(path=tmp_path, download=False)


# --------------------------------------------------------------------------- download


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves server.routes[path] = (body, mode); mode 'lie' announces more bytes than sent."""

    def do_GET(self):
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, mode = route
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        announced = len(body) + 1000 if mode == "lie" else len(body)
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True  # 'lie': the connection closes before the promised bytes

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes = {}
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def dead_url():
    """A URL on a local port that nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/frey_rawface.mat"


@pytest.fixture(scope="module")
def frey_synthetic():
    """(ff uint8 (560, 1965), bytes of a .mat file holding it)."""
    ff = np.random.default_rng(1).integers(0, 256, (560, 1965), dtype=np.uint8)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"ff": ff})
    return ff, buf.getvalue()


def leftovers(directory):
    return sorted(os.listdir(directory)) if directory.exists() else []


def test_download_success_lands_verified_in_cache(server, frey_synthetic, cache_dir, monkeypatch, no_data_dir):
    ff, body = frey_synthetic
    server.routes["/frey_rawface.mat"] = (body, "ok")
    # The first mirror is missing (404): the next one is tried.
    urls = (server.url + "/gone/frey_rawface.mat", server.url + "/frey_rawface.mat")
    accept(monkeypatch, "frey_rawface.mat", body, urls=urls)
    d = data.load_frey_face(download=True, seed=3)
    assert leftovers(cache_dir) == ["frey_rawface.mat"], "no temp files may remain"
    assert (cache_dir / "frey_rawface.mat").read_bytes() == body
    train_idx, test_idx = data.split_indices(1965, data.FREY_N_TEST, 3)
    full = ff.T / 256.0
    assert np.array_equal(d.train.x, full[train_idx]) and np.array_equal(d.test.x, full[test_idx])
    # Now cached: found without the network.
    server.routes.clear()
    assert data.find_file("frey_rawface.mat", download=False) == cache_dir / "frey_rawface.mat"
    assert np.array_equal(data.load_frey_face(download=True, seed=3).test.x, d.test.x)


def test_download_with_wrong_checksum_keeps_nothing(server, frey_synthetic, cache_dir, monkeypatch, no_data_dir):
    _, body = frey_synthetic
    corrupt = bytearray(body)
    corrupt[len(corrupt) // 2] ^= 0xFF
    server.routes["/frey_rawface.mat"] = (bytes(corrupt), "ok")
    accept(monkeypatch, "frey_rawface.mat", body, urls=(server.url + "/frey_rawface.mat",))
    with pytest.raises(data.ChecksumError) as info:
        data.load_frey_face(download=True)
    msg = str(info.value)
    assert "frey_rawface.mat" in msg and hashlib.sha256(body).hexdigest() in msg
    assert hashlib.sha256(bytes(corrupt)).hexdigest() in msg
    assert leftovers(cache_dir) == []


@pytest.mark.parametrize("mode", ["lie", "honest"])
def test_truncated_download_keeps_nothing(server, frey_synthetic, cache_dir, monkeypatch, no_data_dir, mode):
    _, body = frey_synthetic
    # 'lie': Content-Length promises more than is sent, then the connection closes;
    # 'honest': a consistent header but only half the file.
    server.routes["/frey_rawface.mat"] = (body[: len(body) // 2], mode)
    accept(monkeypatch, "frey_rawface.mat", body, urls=(server.url + "/frey_rawface.mat",))
    with pytest.raises((data.DataNotFoundError, data.ChecksumError)) as info:
        data.find_file("frey_rawface.mat", download=True)
    assert "frey_rawface.mat" in str(info.value)
    assert leftovers(cache_dir) == []


def test_offline_raises_not_found_naming_file_and_places(tmp_path, frey_synthetic, cache_dir, monkeypatch, no_data_dir):
    _, body = frey_synthetic
    accept(monkeypatch, "frey_rawface.mat", body, urls=(dead_url(),))
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_frey_face(path=tmp_path / "nowhere", download=True)
    msg = str(info.value)
    for text in ("frey_rawface.mat", str(tmp_path / "nowhere"), str(cache_dir), "NPVAE_DATA_DIR",
                 "path=", "127.0.0.1"):
        assert text in msg
    assert isinstance(info.value, FileNotFoundError)
    assert leftovers(cache_dir) == []


def test_download_false_never_touches_the_network(server, frey_synthetic, cache_dir, monkeypatch, no_data_dir):
    _, body = frey_synthetic
    server.routes["/frey_rawface.mat"] = (body, "ok")
    accept(monkeypatch, "frey_rawface.mat", body, urls=(server.url + "/frey_rawface.mat",))
    with pytest.raises(data.DataNotFoundError, match="download=False"):
        data.find_file("frey_rawface.mat", download=False)
    assert not cache_dir.exists()


# --------------------------------------------------------------------------- local lookup


def test_lookup_order_and_bad_local_copy(tmp_path, frey_synthetic, monkeypatch):
    _, body = frey_synthetic
    accept(monkeypatch, "frey_rawface.mat", body, urls=(dead_url(),))
    good, env, bad = tmp_path / "good", tmp_path / "env", tmp_path / "bad"
    for d in (good, env, bad):
        d.mkdir()
    (good / "frey_rawface.mat").write_bytes(body)
    (env / "frey_rawface.mat").write_bytes(body)
    (bad / "frey_rawface.mat").write_bytes(body[:-10])
    monkeypatch.setenv("NPVAE_DATA_DIR", str(env))
    assert data.find_file("frey_rawface.mat") == env / "frey_rawface.mat"
    assert data.find_file("frey_rawface.mat", path=good) == good / "frey_rawface.mat"
    assert data.find_file("frey_rawface.mat", path=good / "frey_rawface.mat") == good / "frey_rawface.mat"
    # The first copy found is bad: an error, never a silent fall-back or download.
    with pytest.raises(data.ChecksumError, match="failed its checksum"):
        data.load_frey_face(path=bad, download=True)
    monkeypatch.setenv("NPVAE_DATA_DIR", str(bad))
    with pytest.raises(data.ChecksumError):
        data.find_file("frey_rawface.mat")


REAL_FILES = ["mnist.pkl.gz", "frey_rawface.mat"] + [f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")]


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_files_pass_their_registered_checksums(name):
    directory = real_dir(name)
    assert data.find_file(name, path=directory, download=False) == directory / name


def test_unknown_name_and_bad_dtype():
    with pytest.raises(ValueError, match="unknown data file"):
        data.find_file("cifar.tar.gz", download=False)
    with pytest.raises(ValueError, match="floating point"):
        data.load_mnist(dtype=np.int32, download=False)


# --------------------------------------------------------------------------- containers and binarize


def test_split_validates_its_arrays():
    x = np.zeros((4, 6))
    data.Split(x, np.arange(4, dtype=np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):
        data.Split(np.zeros((6, 4)).T)
    with pytest.raises(ValueError, match="int64"):
        data.Split(x, np.arange(4, dtype=np.int32))
    with pytest.raises(ValueError, match="shape"):
        data.Split(x, np.arange(3, dtype=np.int64))
    with pytest.raises(ValueError, match="image_shape"):
        data.Dataset("d", data.Split(x), None, data.Split(x), (2, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binarize_is_a_bernoulli_sample_in_the_same_dtype(dtype):
    p = np.linspace(0, 1, 200_000, dtype=dtype).reshape(400, 500)
    b = data.binarize(p, np.random.default_rng(0))
    assert b.dtype == dtype and b.shape == p.shape
    assert set(np.unique(b).tolist()) <= {0.0, 1.0}
    assert np.all(b[p == 0] == 0) and np.all(b[p == 1] == 1)
    assert b.mean() == pytest.approx(0.5, abs=0.005)
    assert np.array_equal(b, data.binarize(p, np.random.default_rng(0)))


# --------------------------------------------------------------------------- fileio


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "ckpt.npz"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npz"  # np.savez keeps the name
        np.savez(tmp, a=np.arange(3))
    assert np.array_equal(np.load(target)["a"], np.arange(3))
    assert os.listdir(tmp_path) == ["ckpt.npz"]


@pytest.mark.parametrize("existed", [True, False])
def test_atomic_path_on_exception_leaves_target_unchanged(tmp_path, existed):
    target = tmp_path / "file.bin"
    if existed:
        target.write_bytes(b"precious")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-writ")
            raise Boom
    assert os.listdir(tmp_path) == (["file.bin"] if existed else [])
    if existed:
        assert target.read_bytes() == b"precious"


def test_sha256_file(tmp_path):
    blob = os.urandom(3 << 20)  # several chunks
    (tmp_path / "f").write_bytes(blob)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(blob).hexdigest()


def test_fixed_binarization_trains_on_the_once_binarized_set_in_mnists_order():
    path = real_dir("mnist.pkl.gz")
    fixed = data.load_training_data("mnist", "fixed", np.float32, path, eval_seed=7)
    dynamic = data.load_training_data("mnist", "dynamic", np.float32, path, eval_seed=7)
    assert not fixed.dynamic and fixed.binary and fixed.train_x is fixed.train_eval_x
    assert np.array_equal(fixed.train_x, dynamic.train_eval_x) and np.array_equal(fixed.test_x, dynamic.test_x)
    assert np.array_equal(fixed.test_y, dynamic.test_y)
    assert set(np.unique(fixed.train_x).tolist()) == {0.0, 1.0}
    # MNIST's own order: the first 1000 test points carry about the set's ink (unlike Larochelle's file)
    assert abs(fixed.test_x[:1000].mean() - fixed.test_x.mean()) < 0.015
