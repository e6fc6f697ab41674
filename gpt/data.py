"""Data for the character-level GPT: a tokenizer, Tiny Shakespeare, and random batches.

Shapes: N dataset length (characters), B batch size, T time (block_size), V vocab size.

    text = load_text()                      # --data PATH, $TINYSHAKESPEARE_PATH or a cached download
    tok = CharTokenizer(text)               # V = 65 for Tiny Shakespeare
    train, val = train_val_split(tok.encode(text))          # (0.9 N,), (0.1 N,)
    x, y = get_batch(train, 32, 8, np.random.default_rng(0))  # (B, T) each, y = x shifted by one
"""
import hashlib
import http.client
import numbers
import os
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
HOW_TO_PASS = "pass --data PATH (or set TINYSHAKESPEARE_PATH=PATH) to a local copy of input.txt"


class DataError(RuntimeError):
    """The dataset could not be obtained: offline, or the download was corrupt."""


class CharTokenizer:
    """Maps each character to an integer id: the vocabulary is the sorted set of characters.

    Code points go through a lookup table (code point -> id, -1 if unknown), so encoding the
    1.1M-character Tiny Shakespeare takes milliseconds instead of a Python loop per character.
    """

    def __init__(self, text):
        if not text:
            raise ValueError("cannot build a vocabulary from empty text")
        self._build(sorted(set(text)))

    @classmethod
    def from_chars(cls, chars):
        """Rebuild a tokenizer from a saved vocabulary (`tok.chars`); ids follow its order."""
        chars = list(chars)
        bad = [c for c in chars if not (isinstance(c, str) and len(c) == 1)]
        if not chars or bad or len(set(chars)) != len(chars):
            raise ValueError(f"chars must be a non-empty list of distinct single characters, "
                             f"got {len(chars)} entries (bad: {bad[:5]!r})")
        tok = cls.__new__(cls)
        tok._build(chars)
        return tok

    @classmethod
    def from_dict(cls, d):
        return cls.from_chars(d["chars"])

    def to_dict(self):
        return {"chars": list(self.chars)}

    def _build(self, chars):
        self.chars = chars
        self.vocab_size = len(chars)
        self.stoi = {ch: i for i, ch in enumerate(chars)}
        self.itos = {i: ch for i, ch in enumerate(chars)}
        self._codes = np.array([ord(c) for c in chars], dtype="<u4")       # (V,) id -> code point
        self._table = np.full(int(self._codes.max()) + 1, -1, dtype=np.int64)
        self._table[self._codes] = np.arange(self.vocab_size)              # code point -> id

    def encode(self, s):
        """str of length N -> int64 array of ids, shape (N,)."""
        codes = np.frombuffer(s.encode("utf-32-le", "surrogatepass"), dtype="<u4")  # (N,)
        known = codes < len(self._table)
        ids = np.where(known, self._table[np.where(known, codes, 0)], -1)           # (N,)
        unknown = np.flatnonzero(ids < 0)
        if unknown.size:
            found = list(dict.fromkeys(s[i] for i in unknown[:1000]))
            raise ValueError(
                f"{unknown.size} character(s) not in the vocabulary, e.g. {found[:10]!r} "
                f"(first at position {unknown[0]}); the vocabulary comes from the training "
                f"text ({self.vocab_size} characters)")
        return ids

    def decode(self, ids):
        """Ids of shape (N,) (list, NumPy/CuPy array, Tensor) -> str of length N."""
        if not isinstance(ids, np.ndarray) and hasattr(ids, "tolist"):
            ids = ids.tolist()                       # CuPy arrays and Tensors
        ids = np.asarray(ids)
        if ids.size == 0:
            return ""
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ValueError(f"decode expects a 1-D sequence of integer ids, got shape "
                             f"{ids.shape} dtype {ids.dtype} (for a batch, decode one row)")
        bad = np.flatnonzero((ids < 0) | (ids >= self.vocab_size))
        if bad.size:
            raise ValueError(f"id {ids[bad[0]]} at position {bad[0]} is out of range for "
                             f"vocab_size {self.vocab_size} ({bad.size} bad id(s))")
        return self._codes[ids].tobytes().decode("utf-32-le", "surrogatepass")

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def default_cache_dir():
    """$TENSORLITE_CACHE, else $XDG_CACHE_HOME/tensorlite-gpt, else ~/.cache/tensorlite-gpt."""
    if os.environ.get("TENSORLITE_CACHE"):
        return Path(os.environ["TENSORLITE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "tensorlite-gpt"


def download_tinyshakespeare(cache_dir=None, timeout=30):
    """Download Tiny Shakespeare into cache_dir, check its sha256, and return its path.

    The bytes go to a temporary file that is renamed into place only once the checksum
    matches, so an interrupted or corrupt download never leaves a file behind.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache_dir / "tinyshakespeare.txt"
    try:
        with urllib.request.urlopen(TINYSHAKESPEARE_URL, timeout=timeout) as response:
            data = response.read()
    except (OSError, http.client.HTTPException) as e:   # URLError and timeouts are OSErrors
        raise DataError(f"could not download Tiny Shakespeare from {TINYSHAKESPEARE_URL} "
                        f"({e}); if you are offline, {HOW_TO_PASS}") from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != TINYSHAKESPEARE_SHA256:
        raise DataError(f"downloaded Tiny Shakespeare has sha256 {digest}, expected "
                        f"{TINYSHAKESPEARE_SHA256} ({len(data)} bytes); nothing was saved. "
                        f"Try again, or {HOW_TO_PASS}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tinyshakespeare.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)                        # atomic: readers never see half a file
    except BaseException:
        os.unlink(tmp)
        raise
    return dest


def find_tinyshakespeare():
    """The Tiny Shakespeare that load_text() would read without downloading: the file
    $TINYSHAKESPEARE_PATH names, else the cached download; None when neither is there."""
    for path in (os.environ.get("TINYSHAKESPEARE_PATH"), default_cache_dir() / "tinyshakespeare.txt"):
        if path and Path(path).expanduser().is_file():
            return Path(path).expanduser()
    return None


def data_path(path=None):
    """The file load_text(path) reads: path, else $TINYSHAKESPEARE_PATH, else Tiny Shakespeare
    in the cache directory (downloaded there if missing). Errors name where the path came from."""
    if path is not None:
        source = "--data"
    elif os.environ.get("TINYSHAKESPEARE_PATH"):
        path, source = os.environ["TINYSHAKESPEARE_PATH"], "TINYSHAKESPEARE_PATH"
    else:
        path, source = default_cache_dir() / "tinyshakespeare.txt", "cache"
        if not path.exists():
            path = download_tinyshakespeare(path.parent)
    path = Path(path).expanduser()
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.txt"))[:3]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise IsADirectoryError(f"data path {str(path)!r} (from {source}) is a directory, not a text "
                                f"file{hint}: pass the file itself")
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} (from {source}) does not exist")
    return path


def load_text(path=None):
    """Return the training text as a str, from the first of: path, $TINYSHAKESPEARE_PATH,
    or Tiny Shakespeare in the cache directory (downloaded there if missing)."""
    path = data_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"data file {str(path)!r} is not UTF-8 text: {e}") from e
    if not text:
        raise ValueError(f"data file {str(path)!r} is empty (0 characters)")
    return text


def text_sha256(text):
    """The sha256 of text as UTF-8: what a checkpoint records of its data, to tell it changed."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def dataset_name(path, text):
    """A short name for the data, for default output folders: "shakespeare" for Tiny
    Shakespeare (by checksum, whatever the file is called), else the file's name without
    its extension (mytext.txt -> "mytext")."""
    if text_sha256(text) == TINYSHAKESPEARE_SHA256:
        return "shakespeare"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(path).stem).strip("._")
    return name or "data"


def train_val_split(ids, frac=0.9):
    """First frac of ids for training, the rest for validation: (N,) -> (n,), (N - n,)."""
    if not 0 < frac < 1:
        raise ValueError(f"frac must be in (0, 1), got {frac}")
    n = int(frac * len(ids))
    return ids[:n], ids[n:]


def get_batch(data, batch_size, block_size, rng):
    """Sample B random windows of T+1 ids from data (N,): inputs x and targets y, (B, T) int64.

    y[b, t] = x[b, t + 1] for t < T - 1: every position predicts the next character.
    """
    for name, v in (("batch_size", batch_size), ("block_size", block_size)):
        if not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    data = np.asarray(data)
    if data.ndim != 1:
        raise ValueError(f"data must be 1-D (N,), got shape {data.shape}")
    if len(data) <= block_size:
        raise ValueError(f"dataset too short: len(data) = {len(data)} but block_size = "
                         f"{block_size} needs at least {block_size + 1} ids")
    offsets = rng.integers(0, len(data) - block_size, batch_size)   # (B,)
    idx = offsets[:, None] + np.arange(block_size)                   # (B, T)
    x = data[idx].astype(np.int64, copy=False)                       # (B, T)
    y = data[idx + 1].astype(np.int64, copy=False)                   # (B, T)
    return x, y
