"""Open and create ROS 2 bags (rosbags only, no rclpy) with errors that name the bag.

rosbags raises a mix of its own errors, sqlite3 errors, struct / zstd errors and KeyErrors when
a bag is truncated or corrupt, often without the bag's path. Everything that reads a bag goes
through :func:`read_messages`, which turns all of them into one :class:`BagError` naming the bag
and what broke, so a command can print one clear line instead of a traceback.
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zlib
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["BagError", "STORAGES", "read_messages", "bag_topics", "create_writer", "writing_bag",
           "typestore", "DurableSqliteBag"]

STORAGES = ("sqlite3", "mcap")


class BagError(RuntimeError):
    """A bag that cannot be read or written; the message names the bag."""


# rosbags is imported where it is used: the package works (training, datasets) without it.
def typestore():
    """rosbags' message definitions of the ROS distribution the wheels come from."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if str(error) else text


def _open_reader(path: Path):
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise BagError(f"bag {path}: no such file or directory")
    if not path.is_dir() or not (path / "metadata.yaml").is_file():
        raise BagError(f"bag {path}: not a ROS 2 bag folder (needs metadata.yaml next to the "
                       f".db3 / .mcap files)")
    reader = Reader(path)
    try:
        reader.open()
    except Exception as error:  # noqa: BLE001 - any failure to open is the bag's problem
        raise BagError(f"bag {path} cannot be opened (truncated or corrupt?): "
                       f"{_describe(error)}") from error
    return reader


def bag_topics(path: str | os.PathLike) -> dict[str, str]:
    """{topic: message type} of a bag."""
    path = Path(path)
    reader = _open_reader(path)
    try:
        return {c.topic: c.msgtype for c in reader.connections}
    finally:
        reader.close()


def read_messages(path: str | os.PathLike, topics: Iterable[str] | None = None, *,
                  start_ns: int | None = None) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, message type, log time ns, CDR bytes) in log-time order.

    ``topics`` None reads every topic; topics the bag lacks are simply absent.
    """
    path = Path(path)
    reader = _open_reader(path)
    try:
        wanted = None if topics is None else set(topics)
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not connections:
            return
        try:
            for connection, timestamp, data in reader.messages(connections, start=start_ns):
                yield connection.topic, connection.msgtype, timestamp, data
        except BagError:
            raise
        except Exception as error:  # noqa: BLE001 - see the module docstring
            raise BagError(f"bag {path} is truncated or corrupt: {_describe(error)}") from error
    finally:
        try:
            reader.close()
        except Exception:  # noqa: BLE001 - closing a broken bag must not hide the real error
            pass


def create_writer(path: str | os.PathLike, *, storage: str = "sqlite3",
                  compression: str = "none", overwrite: bool = False):
    """An opened rosbags Writer at ``path`` (a new folder).

    ``compression``: "none", "file" or "message" (zstd, as rosbag2's --compression-mode).
    An existing path is refused unless ``overwrite``: a recording is too easy to lose.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.writer import CompressionFormat, CompressionMode

    path = Path(path)
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    modes = {"none": None, "file": CompressionMode.FILE, "message": CompressionMode.MESSAGE}
    if compression not in modes:
        raise ValueError(f"compression must be one of {tuple(modes)}, got {compression!r}")
    if path.exists():
        if not overwrite:
            raise BagError(f"bag {path} exists already; choose another path or pass --overwrite")
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(path, version=9, storage_plugin=plugin)
    if modes[compression] is not None:
        writer.set_compression(modes[compression], CompressionFormat.ZSTD)
    writer.open()
    if storage == "mcap":
        _write_chunk_crcs(writer.storage)
    return writer


# An MCAP Chunk record: opcode (1 byte) + record length (8), then message start time, message
# end time and uncompressed size (8 each), then the CRC-32 of the uncompressed records (4).
_CHUNK_CRC_OFFSET = 1 + 8 + 3 * 8


def _write_chunk_crcs(storage) -> None:
    """Make rosbags' MCAP writer (which writes chunk CRC 0, "not computed") store each chunk's
    CRC-32, so a reader (rosbags checks non-zero CRCs) notices a corrupted chunk instead of
    decoding other numbers from it. The CRC field is patched in place after the chunk record
    is written; nothing else of the file changes."""
    close_chunk = storage.close_chunk

    def close_chunk_with_crc() -> None:
        crc = zlib.crc32(storage.chunk.bio.getvalue())
        start = storage.bio.tell()
        close_chunk()
        end = storage.bio.tell()
        storage.bio.seek(start + _CHUNK_CRC_OFFSET)
        storage.bio.write(struct.pack("<I", crc))
        storage.bio.seek(end)

    storage.close_chunk = close_chunk_with_crc


@contextmanager
def writing_bag(path: str | os.PathLike, *, storage: str = "sqlite3", compression: str = "none",
                overwrite: bool = False):
    """A Writer on a hidden folder next to ``path``, renamed to ``path`` once it closed cleanly.

    A bag is a folder, so this is the folder version of atomic_path: a crash or Ctrl-C leaves
    no half-written bag under the final name (readers would take it for a corrupt one).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise BagError(f"bag {path} exists already; choose another path or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging_parent = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    staging = staging_parent / path.name  # rosbags names the storage files after the folder
    try:
        writer = create_writer(staging, storage=storage, compression=compression)
        try:
            yield writer
        finally:
            writer.close()
        if path.exists():  # overwrite was asked for
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        staging.rename(path)
    finally:
        shutil.rmtree(staging_parent, ignore_errors=True)


class DurableSqliteBag:
    """A sqlite3 bag written in place that stays a valid bag on disk up to its last ``flush``,
    even when the writing process is killed (SIGKILL, power loss of the process).

    rosbags writes metadata.yaml only when it closes a bag and keeps one transaction open until
    then, so a recorder that dies loses everything. Here the database runs in WAL mode and
    ``flush`` commits, checkpoints the WAL into the database file and rewrites metadata.yaml
    (atomically) for what is committed. Readers open the database immutable (rosbags) or
    recover the committed WAL frames (sqlite), and see the bag as of the last flush. ``close``
    returns the database to rollback-journal mode and lets rosbags write the final metadata.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.writer = create_writer(self.path, storage="sqlite3", overwrite=overwrite)
        self._conn = self.writer.storage.conn
        self._conn.commit()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self.flush()

    def add_connection(self, *args, **kwargs):
        return self.writer.add_connection(*args, **kwargs)

    def write(self, connection, timestamp: int, data) -> None:
        self.writer.write(connection, timestamp, data)

    def flush(self) -> None:
        self._conn.commit()
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        text = _metadata_text(self.writer)
        tmp = self.path / "metadata.yaml.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path / "metadata.yaml")

    def close(self) -> None:
        self._conn.commit()
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.execute("PRAGMA journal_mode=DELETE")
        self.writer.close()


def _metadata_text(writer) -> str:
    """metadata.yaml of what ``writer`` (a rosbags sqlite3 Writer) has written so far, as its
    close() would write it (rosbag2 format version 9)."""
    from rosbags.rosbag2.metadata import dump_qos_v9
    from ruamel.yaml import YAML

    counts = {c.id: writer.counts.get(c.id, 0) for c in writer.connections}
    total = sum(counts.values())
    start = writer.min_timestamp if total else 0
    duration = max(0, writer.max_timestamp - writer.min_timestamp) if total else 0
    name = writer.storage.path.name
    info = {
        "version": writer.version,
        "storage_identifier": "sqlite3",
        "relative_file_paths": [name],
        "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": total,
        "topics_with_message_count": [
            {"topic_metadata": {"name": c.topic, "type": c.msgtype,
                                "serialization_format": c.ext.serialization_format,
                                "offered_qos_profiles": dump_qos_v9(c.ext.offered_qos_profiles),
                                "type_description_hash": c.digest},
             "message_count": counts[c.id]}
            for c in writer.connections],
        "compression_format": "",
        "compression_mode": "",
        "files": [{"path": name, "starting_time": {"nanoseconds_since_epoch": start},
                   "duration": {"nanoseconds": duration}, "message_count": total}],
        "custom_data": None,
        "ros_distro": "rosbags",
    }
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    text = StringIO()
    yaml.dump({"rosbag2_bagfile_information": info}, text)
    return text.getvalue()
