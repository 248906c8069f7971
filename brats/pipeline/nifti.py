"""Read NIfTI files defensively: header checked before any large allocation, gzip bounded."""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InvalidCaseError

try:  # zlib-ng inflates BraTS files 2-5x faster than the standard zlib (docs/benchmarks.md)
    from zlib_ng import zlib_ng as _inflate
except ImportError:  # pragma: no cover - optional speed-up
    _inflate = zlib  # type: ignore[assignment]

_HEADER_BYTES = 352  # NIfTI-1 header (348) + extension flag (4)
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class NiftiLimits:
    """Sanity bounds on header dimensions, checked before the voxels are decompressed."""

    max_dim: int = 1024
    max_voxels: int = 128 * 1024 * 1024


@dataclass
class NiftiSource:
    """One file's raw bytes, parsed header and content hash; voxels are decoded on demand."""

    path: Path
    raw: bytes
    sha256: str
    header: nib.Nifti1Header
    shape: tuple[int, ...]
    affine: np.ndarray
    zooms: tuple[float, ...]
    gzipped: bool

    def load(self) -> np.ndarray:
        """Decompress (bounded by the header's size) and decode the voxel array."""
        hdr = self.header
        offset = max(int(hdr.get_data_offset()), _HEADER_BYTES)
        dtype = hdr.get_data_dtype()
        expected = offset + int(np.prod(self.shape)) * dtype.itemsize
        data = _decompress_exactly(self, expected) if self.gzipped else self.raw
        if len(data) < expected:
            raise InvalidCaseError(self.path, f"truncated: header promises {expected} bytes, file holds {len(data)}")
        arr = np.frombuffer(data, dtype=dtype, count=int(np.prod(self.shape)), offset=offset)
        arr = arr.reshape(self.shape, order="F")
        if not arr.dtype.isnative:  # big-endian files: every later step reads native codes
            arr = arr.astype(arr.dtype.newbyteorder("="))
        slope, inter = hdr.get_slope_inter()
        if slope is not None and (slope != 1 or (inter or 0) != 0):
            arr = arr * np.float32(slope) + np.float32(inter or 0)
        return arr


def _decompress_exactly(src: NiftiSource, expected: int) -> bytes:
    """Inflate `expected` bytes, then require the gzip stream to end there with a valid CRC."""
    d = _inflate.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = d.decompress(src.raw, expected)
        extra = d.decompress(d.unconsumed_tail, 1) if d.unconsumed_tail else b""
        if not d.eof and not extra:
            extra = d.flush(1)
    except _inflate.error as exc:
        raise InvalidCaseError(src.path, f"corrupt gzip data ({exc})") from None
    if len(data) < expected:
        raise InvalidCaseError(src.path, f"truncated: header promises {expected} bytes, gzip stream holds {len(data)}")
    if extra:
        raise InvalidCaseError(src.path, "gzip stream holds more data than the NIfTI header describes")
    if not d.eof:
        raise InvalidCaseError(src.path, "truncated gzip file (stream ends before its checksum)")
    return data


def _read_header_bytes(path: Path, raw: bytes) -> tuple[bytes, bool]:
    if raw[:2] == _GZIP_MAGIC:
        try:
            head = _inflate.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(raw, _HEADER_BYTES)
        except _inflate.error as exc:
            raise InvalidCaseError(path, f"corrupt gzip data ({exc})") from None
        return head, True
    if path.name.lower().endswith(".gz"):
        raise InvalidCaseError(path, "not a gzip file although named .gz")
    return raw[:_HEADER_BYTES], False


def open_nifti(path: str | Path, limits: NiftiLimits = NiftiLimits()) -> NiftiSource:
    """Read a file's bytes and validate its header; voxels are not decoded yet.

    Rejects empty, non-gzip `.gz`, non-NIfTI, non-3-D and absurdly sized files with an
    `InvalidCaseError` naming the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidCaseError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not raw:
        raise InvalidCaseError(path, "empty file (0 bytes)")
    head, gzipped = _read_header_bytes(path, raw)
    if len(head) < 348:
        raise InvalidCaseError(path, f"too short for a NIfTI header ({len(head)} bytes)")
    try:
        hdr = nib.Nifti1Header(binaryblock=head[:348], check=True)  # extensions are not needed
        shape = tuple(int(s) for s in hdr.get_data_shape())
        dtype = hdr.get_data_dtype()
    except Exception as exc:  # nibabel raises several types for a bad header
        raise InvalidCaseError(path, f"not a NIfTI-1 file ({exc})") from None
    if len(shape) != 3:
        dims = "x".join(str(s) for s in shape) or "0"
        raise InvalidCaseError(path, f"image is {len(shape)}-D ({dims}); BraTS images must be 3-D")
    if min(shape) < 1 or max(shape) > limits.max_dim or int(np.prod(shape)) > limits.max_voxels:
        raise InvalidCaseError(
            path, f"header claims an implausible size {'x'.join(map(str, shape))} (limit {limits.max_dim} per axis, "
                  f"{limits.max_voxels} voxels)")
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise InvalidCaseError(path, f"unsupported voxel type {dtype}")
    affine = hdr.get_best_affine()
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InvalidCaseError(path, "header affine is not finite or not invertible")
    zooms = tuple(float(z) for z in hdr.get_zooms()[:3])
    return NiftiSource(path=path, raw=raw, sha256=hashlib.sha256(raw).hexdigest(), header=hdr, shape=shape,
                       affine=affine, zooms=zooms, gzipped=gzipped)
