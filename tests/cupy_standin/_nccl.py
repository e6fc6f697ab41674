"""cupy.cuda.nccl for the stand-in: the communicator that gpt.distributed builds and all-reduces with.

The names, constants and call signatures are CuPy 14's (cupy_backends.cuda.libs.nccl);
tests/test_distributed.py checks them against the real module, loaded over a fake libnccl.
A communicator of one rank sums nothing; communicators made from one unique id in several
threads (ranks simulated by threads) meet in ncclCommInitRank and in each allReduce, which
sums their buffers. Buffers are pointers (ints), as in CuPy: the addresses of stand-in arrays,
which live in host memory here. Each allReduce is one launch and adds its count to `_calls`.
"""
import ctypes
import operator
import os
import threading

import numpy as np

from ._array import counts

available = True

NCCL_INT8, NCCL_CHAR, NCCL_UINT8, NCCL_INT32, NCCL_INT, NCCL_UINT32 = 0, 0, 1, 2, 2, 3
NCCL_INT64, NCCL_UINT64, NCCL_FLOAT16, NCCL_HALF, NCCL_FLOAT32, NCCL_FLOAT = 4, 5, 6, 6, 7, 7
NCCL_FLOAT64, NCCL_DOUBLE, NCCL_BFLOAT16 = 8, 8, 9
NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN, NCCL_AVG = 0, 1, 2, 3, 4

_DTYPES = {NCCL_INT8: np.int8, NCCL_UINT8: np.uint8, NCCL_INT32: np.int32, NCCL_UINT32: np.uint32,
           NCCL_INT64: np.int64, NCCL_UINT64: np.uint64, NCCL_FLOAT16: np.float16,
           NCCL_FLOAT32: np.float32, NCCL_FLOAT64: np.float64}
_UNIQUE_ID_BYTES = 128
_calls = []          # the count of each allReduce, in order
_cliques = {}        # unique id -> the ranks that joined it
_lock = threading.Lock()


class NcclError(RuntimeError):
    def __init__(self, status):
        self.status = status
        super().__init__(f"NCCL_ERROR_INVALID_ARGUMENT: status {status}")


def get_version():
    return 22501


def get_build_version():
    return 22501


def get_unique_id():
    """A fresh id, as bytes (CuPy 14; a tuple of ints before)."""
    return os.urandom(_UNIQUE_ID_BYTES)


class _Clique:
    def __init__(self, ndev):
        self.ndev = ndev
        self.barrier = threading.Barrier(ndev, timeout=30)
        self.buffers = [None] * ndev


def _buffer(ptr, count, datatype):
    dtype = np.dtype(_DTYPES[datatype])
    return np.frombuffer((ctypes.c_char * (count * dtype.itemsize)).from_address(ptr), dtype=dtype)


class NcclCommunicator:
    """NcclCommunicator(int ndev, bytes commId, int rank, NcclConfig config=None)"""

    def __init__(self, ndev, commId, rank, config=None):
        ndev, rank = operator.index(ndev), operator.index(rank)
        if not isinstance(commId, bytes):
            raise TypeError(f"Argument 'commId' has incorrect type (expected bytes, got {type(commId).__name__})")
        if len(commId) != _UNIQUE_ID_BYTES or not 0 <= rank < ndev:
            raise NcclError(4)
        with _lock:
            clique = _cliques.setdefault(commId, _Clique(ndev))
        if clique.ndev != ndev:
            raise NcclError(4)
        self._ndev, self._rank, self._clique = ndev, rank, clique
        if ndev > 1:
            clique.barrier.wait()          # ncclCommInitRank returns once every rank has joined

    def size(self):
        return self._ndev

    def rank_id(self):
        return self._rank

    def device_id(self):
        return 0

    def destroy(self):
        self._clique = None

    def abort(self):
        self._clique = None

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
        sendbuf, recvbuf, count, stream = map(operator.index, (sendbuf, recvbuf, count, stream))
        if self._clique is None:
            raise NcclError(4)
        if datatype not in _DTYPES or op != NCCL_SUM:
            raise NotImplementedError("the stand-in's allReduce sums the dtypes of _DTYPES")
        counts.add("launches", "nccl.allReduce")
        with _lock:
            _calls.append(count)
        send, recv = _buffer(sendbuf, count, datatype), _buffer(recvbuf, count, datatype)
        if self._ndev == 1:
            recv[...] = send
            return
        clique = self._clique
        clique.buffers[self._rank] = send.copy()
        clique.barrier.wait()
        total = sum(clique.buffers[1:], clique.buffers[0].copy())
        clique.barrier.wait()
        recv[...] = total
