"""Build small zip and tar archives, well-formed or hostile, and Parquet files, for the tests."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile


def zip_bytes(members: dict[str, bytes], *, link: dict[str, str] | None = None) -> bytes:
    """A zip of `members` (name -> bytes), plus symbolic links (name -> target)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
        for name, target in (link or {}).items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def corrupt_member_data(data: bytes, member_payload: bytes) -> bytes:
    """Flip a byte inside a stored member's payload, leaving the headers intact."""
    at = data.index(member_payload) + len(member_payload) // 2
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def stored_zip(members: dict[str, bytes]) -> bytes:
    """A zip whose members are stored uncompressed (so their bytes can be found and damaged)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def tar_of(members: dict[str, bytes], kinds: dict[str, bytes] | None = None) -> bytes:
    """A plain tar of `members`; `kinds` adds special members (name -> tar type)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, kind in (kinds or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            tf.addfile(info)
    return buffer.getvalue()


def parquet_of(rows: list[dict]) -> bytes:
    """A Parquet file of `rows` (name -> value each), as a dataset's shards on the Hub are."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()
