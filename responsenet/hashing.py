"""Content checksums for corpus files (shards, media) and dataset.json's ``checksums`` mapping."""

from __future__ import annotations

import hashlib
from pathlib import Path

#: Bytes read per chunk when hashing; files of any size hash in constant memory.
CHUNK_BYTES = 1 << 20


def sha256_file(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Return the SHA-256 of a file's bytes as 64 lowercase hex characters.

    Args:
        path: the file to hash.
        chunk_bytes: bytes read per chunk (memory use stays at one chunk).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Return the SHA-256 of ``data`` as 64 lowercase hex characters."""
    return hashlib.sha256(data).hexdigest()


def checksum_tree(root: str | Path, exclude: tuple[str, ...] = ("dataset.json",)) -> dict[str, str]:
    """SHA-256 of every file under ``root``, as dataset.json's ``checksums`` mapping.

    Args:
        root: the corpus root.
        exclude: root-relative POSIX paths to leave out (dataset.json cannot list itself).

    Returns:
        Root-relative POSIX path -> hex SHA-256, sorted by path; hidden files and folders (such
        as the temporary ``.name.tmp`` files of atomic writes) are skipped.
    """
    root = Path(root)
    sums = {}
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        rel = "/".join(parts)
        if path.is_file() and rel not in exclude and not any(p.startswith(".") for p in parts):
            sums[rel] = sha256_file(path)
    return sums
