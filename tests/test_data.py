import hashlib
import io
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gpt import data
from gpt.data import CharTokenizer, DataError, get_batch, load_text, train_val_split

SHARED_COPY = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare/input.txt"


def find_shakespeare_for_tests():
    """$TINYSHAKESPEARE_PATH, else the download training caches, else a copy beside the checkout;
    the skip says which variable to set."""
    path = data.find_tinyshakespeare() or (SHARED_COPY if SHARED_COPY.is_file() else None)
    if path is None:
        pytest.skip("Tiny Shakespeare not found: set TINYSHAKESPEARE_PATH=/path/to/input.txt, or run "
                    "python examples/train_shakespeare.py once to download it into the cache")
    return path


@pytest.fixture(scope="module")
def shakespeare_path():
    return find_shakespeare_for_tests()


@pytest.fixture(scope="module")
def shakespeare(shakespeare_path):
    return shakespeare_path.read_text(encoding="utf-8")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache directory, with no env var pointing at a local copy."""
    monkeypatch.setenv("TENSORLITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYSHAKESPEARE_PATH", raising=False)
    return tmp_path / "cache"


# --- tokenizer -------------------------------------------------------------------------------

def test_shakespeare_vocab_and_round_trip(shakespeare):
    tok = CharTokenizer(shakespeare)
    assert tok.vocab_size == len(tok.chars) == 65
    assert tok.chars == sorted(set(shakespeare))
    assert tok.chars[:2] == ["\n", " "]
    ids = tok.encode(shakespeare)
    assert ids.dtype == np.int64 and ids.shape == (len(shakespeare),)
    assert ids.min() == 0 and ids.max() == 64
    assert [tok.stoi[c] for c in shakespeare[:100]] == ids[:100].tolist()
    assert tok.decode(ids) == shakespeare
    assert tok.decode(ids[:50].tolist()) == "".join(tok.itos[i] for i in ids[:50].tolist())


def test_sha256_constant_matches_file(shakespeare_path):
    digest = hashlib.sha256(shakespeare_path.read_bytes()).hexdigest()
    assert digest == data.TINYSHAKESPEARE_SHA256


@given(st.text(min_size=1))
@settings(max_examples=50, deadline=None)
def test_round_trip_any_text(text):
    tok = CharTokenizer(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.chars == sorted(set(text))


def test_encode_unknown_char_names_it():
    tok = CharTokenizer("hello")
    with pytest.raises(ValueError, match=r"'z'.*position 2.*training text"):
        tok.encode("hez")
    with pytest.raises(ValueError, match="'€'"):            # code point beyond the table
        tok.encode("€")
    assert tok.encode("").shape == (0,)


def test_decode_accepts_lists_arrays_and_tolist_objects():
    tok = CharTokenizer("abc")

    class FakeTensor:                                        # like tensorlite's Tensor / CuPy
        def tolist(self):
            return [2, 1, 0]

    assert tok.decode([0, 1, 2]) == "abc"
    assert tok.decode(np.array([2, 2], dtype=np.int32)) == "cc"
    assert tok.decode(FakeTensor()) == "cba"
    assert tok.decode([]) == ""


@pytest.mark.parametrize("ids, match", [([0, 3], "id 3 at position 1"), ([-1], "id -1"),
                                        ([[0, 1]], "1-D"), ([0.5], "integer")])
def test_decode_rejects_bad_ids(ids, match):
    with pytest.raises(ValueError, match=match):
        CharTokenizer("abc").decode(ids)


def test_from_chars_and_dict_round_trip():
    tok = CharTokenizer("the quick brown fox")
    for again in (CharTokenizer.from_chars(tok.chars), CharTokenizer.from_dict(tok.to_dict())):
        assert again.chars == tok.chars and again.stoi == tok.stoi
        assert np.array_equal(again.encode("quick fox"), tok.encode("quick fox"))
    assert CharTokenizer.from_chars(["b", "a"]).encode("ab").tolist() == [1, 0]   # order kept
    for bad in ([], ["a", "a"], ["ab"]):
        with pytest.raises(ValueError, match="distinct single characters"):
            CharTokenizer.from_chars(bad)
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer("")


# --- batches ---------------------------------------------------------------------------------

def test_train_val_split():
    train, val = train_val_split(np.arange(100))
    assert np.array_equal(train, np.arange(90)) and np.array_equal(val, np.arange(90, 100))
    with pytest.raises(ValueError, match="frac"):
        train_val_split(np.arange(10), frac=1.5)


def test_get_batch_shapes_shift_and_reproducibility():
    ids = np.arange(1000, dtype=np.uint16)
    x, y = get_batch(ids, 4, 8, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 8) and x.dtype == y.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1])
    assert np.array_equal(y, x + 1)                          # windows of consecutive ids
    offsets = np.random.default_rng(0).integers(0, len(ids) - 8, 4)
    assert np.array_equal(x[:, 0], offsets)
    x2, y2 = get_batch(ids, 4, 8, np.random.default_rng(0))
    assert np.array_equal(x, x2) and np.array_equal(y, y2)


def test_get_batch_smallest_dataset_uses_every_id():
    x, y = get_batch(np.arange(9), 3, 8, np.random.default_rng(1))
    assert (x == np.arange(8)).all() and (y == np.arange(1, 9)).all()


@pytest.mark.parametrize("n", [0, 5, 8])
def test_get_batch_too_short_names_sizes(n):
    with pytest.raises(ValueError, match=rf"len\(data\) = {n}.*block_size = 8"):
        get_batch(np.arange(n), 2, 8, np.random.default_rng(0))


@pytest.mark.parametrize("kwargs, error", [(dict(batch_size=0), ValueError),
                                           (dict(block_size=-1), ValueError),
                                           (dict(block_size=2.0), ValueError),
                                           (dict(rng=0), TypeError)])
def test_get_batch_rejects_bad_arguments(kwargs, error):
    args = dict(data=np.arange(100), batch_size=2, block_size=4, rng=np.random.default_rng(0))
    with pytest.raises(error, match=next(iter(kwargs))):
        get_batch(**{**args, **kwargs})


# --- loading and downloading -----------------------------------------------------------------

def test_load_text_explicit_path_wins(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("from argument é", encoding="utf-8")
    (tmp_path / "b.txt").write_text("from env", encoding="utf-8")
    monkeypatch.setenv("TINYSHAKESPEARE_PATH", str(tmp_path / "b.txt"))
    assert load_text(tmp_path / "a.txt") == "from argument é"
    assert load_text() == "from env"


def test_load_text_missing_path(tmp_path, monkeypatch):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_text(missing)
    monkeypatch.setenv("TINYSHAKESPEARE_PATH", str(missing))
    with pytest.raises(FileNotFoundError, match="nope.txt.*TINYSHAKESPEARE_PATH"):
        load_text()


def test_load_text_says_a_directory_is_a_directory(tmp_path, monkeypatch):
    (tmp_path / "input.txt").write_text("some text")
    with pytest.raises(IsADirectoryError, match=r"data path .* \(from --data\) is a directory, not a text file "
                                                r"\(it holds input\.txt\): pass the file itself"):
        load_text(tmp_path)
    monkeypatch.setenv("TINYSHAKESPEARE_PATH", str(tmp_path))
    with pytest.raises(IsADirectoryError, match=r"\(from TINYSHAKESPEARE_PATH\) is a directory"):
        load_text()


def test_dataset_name_is_shakespeare_by_checksum_else_the_file_name(shakespeare_path, shakespeare):
    assert data.dataset_name(Path("anything/input.txt"), shakespeare) == "shakespeare"
    assert data.dataset_name(Path("books/mytext.txt"), "my own text") == "mytext"
    assert data.dataset_name(Path("my notes (v2).md"), "x") == "my_notes__v2"
    assert data.dataset_name(Path("input.txt"), shakespeare[:-1]) == "input"   # not Tiny Shakespeare


def test_load_text_empty_and_non_utf8(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.txt.*empty"):
        load_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="UTF-8"):
        load_text(tmp_path / "latin1.txt")


def test_offline_download_says_how_to_pass_data(cache, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"no network.*--data PATH.*TINYSHAKESPEARE_PATH"):
        load_text()
    assert not cache.exists() or not any(cache.iterdir())


def test_timeout_is_reported_like_offline(cache, monkeypatch):
    def slow(*args, **kwargs):
        raise TimeoutError("timed out")
    monkeypatch.setattr(urllib.request, "urlopen", slow)
    with pytest.raises(RuntimeError, match="--data PATH"):
        data.download_tinyshakespeare(cache)


def test_checksum_mismatch_raises_and_leaves_no_file(cache, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"not shakespeare"))
    with pytest.raises(DataError, match="sha256.*expected " + data.TINYSHAKESPEARE_SHA256):
        load_text()
    assert not cache.exists() or not any(cache.iterdir())


def test_download_lands_in_cache_and_is_reused(cache, monkeypatch, shakespeare_path, shakespeare):
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        return io.BytesIO(shakespeare_path.read_bytes())
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    assert load_text() == shakespeare
    assert calls == [data.TINYSHAKESPEARE_URL]
    assert [p.name for p in cache.iterdir()] == ["tinyshakespeare.txt"]   # no temp file left
    assert load_text() == shakespeare
    assert len(calls) == 1                                   # second call read the cache


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("TENSORLITE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.default_cache_dir() == tmp_path / "tensorlite-gpt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.default_cache_dir() == Path.home() / ".cache" / "tensorlite-gpt"
    monkeypatch.setenv("TENSORLITE_CACHE", str(tmp_path / "mine"))
    assert data.default_cache_dir() == tmp_path / "mine"


# --- where the tests find Tiny Shakespeare ---------------------------------------------------

def test_the_tests_find_tiny_shakespeare_where_training_caches_it(cache, tmp_path, monkeypatch):
    cached = cache / "tinyshakespeare.txt"                 # where load_text() downloads it to
    cache.mkdir()
    cached.write_text("First Citizen:\n")
    assert data.find_tinyshakespeare() == cached
    assert find_shakespeare_for_tests() == cached
    monkeypatch.setenv("TINYSHAKESPEARE_PATH", str(tmp_path / "mine.txt"))
    (tmp_path / "mine.txt").write_text("mine")
    assert find_shakespeare_for_tests() == tmp_path / "mine.txt"   # the variable comes first


def test_the_skip_without_tiny_shakespeare_names_the_variable_to_set(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "SHARED_COPY", tmp_path / "nowhere" / "input.txt")
    assert data.find_tinyshakespeare() is None
    with pytest.raises(pytest.skip.Exception, match=r"set TINYSHAKESPEARE_PATH=/path/to/input\.txt"):
        find_shakespeare_for_tests()
