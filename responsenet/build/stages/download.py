"""Stage 1, download: fetch one source's media into ``source.<ext>`` and check that it is usable.

URLs go through yt-dlp's Python API (plain http(s) media files through its generic extractor),
local paths are hard-linked (or copied). Every failure carries a reason code: ``not_found``,
``network``, ``unavailable``, ``geo_blocked``, ``auth_required``, ``unsupported_url``,
``in_archive``, ``download_failed``, ``corrupt_media``, ``no_video``, ``no_audio``, ``too_short``.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from responsenet.build.stages.base import Stage, StageConfig, StageContext
from responsenet.errors import StageFailure, UsageError
from responsenet.manifest import SourceEntry
from responsenet.media import MediaInfo, UnreadableMedia, probe

#: Sleep used between retries; tests replace it to record the delays instead of waiting.
_sleep = time.sleep
_log = logging.getLogger(__name__)

_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?(?:/s)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_ARCHIVE_HIT = "has already been recorded in the archive"

#: Reason codes with the phrases of yt-dlp messages that show them, in priority order.
_ERROR_PHRASES = (
    ("geo_blocked", ("not (?:made this video )?available in your country", "geo[- ]?restrict",
                     "geo[- ]?block", "not available from your location")),
    ("not_found", (r"HTTP Error (?:404|410)\b", r"\b404: Not Found")),
    ("unsupported_url", ("Unsupported URL", "is not a valid URL", "No suitable extractor")),
    ("unavailable", ("Private video", "Video unavailable", "This video is not available",
                     "has been removed", "removed by the uploader", "no longer available",
                     "account .* terminated", "copyright claim")),
    ("auth_required", ("Sign in to confirm", "log ?in required", "requires? (?:a )?log ?in",
                       "cookies", "members[- ]only", "age[- ]restricted",
                       r"HTTP Error (?:401|403)\b")),
    ("network", ("timed out", "Connection (?:refused|reset|aborted)", "Name or service not known",
                 "name resolution", "getaddrinfo failed", "Network is unreachable",
                 "No route to host", "Remote end closed", r"bytes read, \d+ more expected",
                 "IncompleteRead", r"Downloaded \d+ bytes, expected \d+ bytes",
                 "Did not get any data blocks", r"HTTP Error (?:429|5\d\d)\b",
                 "Too Many Requests")),
)
_ERROR_PATTERNS = [(reason, re.compile("|".join(phrases), re.IGNORECASE))
                   for reason, phrases in _ERROR_PHRASES]


def parse_rate(text: str) -> int:
    """Parse a download rate such as ``"500K"``, ``"2M"`` or ``"1.5G"`` into bytes per second.

    Units are binary (K = 1024), as in yt-dlp's ``--limit-rate``; a bare number is bytes/s.
    """
    match = _RATE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a rate in bytes/s such as '500K', '2M' or '1G', got {text!r}")
    return int(float(match[1]) * _UNITS[match[2].upper()])


def classify_download_error(message: str) -> str:
    """Map a yt-dlp error message to a reason code (``download_failed`` when nothing matches)."""
    for reason, pattern in _ERROR_PATTERNS:
        if pattern.search(message):
            return reason
    return "download_failed"


def error_reason(error: BaseException) -> str:
    """Reason code of a yt-dlp exception: its message first, then the HTTP status or cause type."""
    reason = classify_download_error(str(error))
    if reason != "download_failed":
        return reason
    cause = (getattr(error, "exc_info", None) or (None, None))[1] or error.__cause__ or error
    status = getattr(cause, "status", None) or getattr(cause, "code", None)
    if isinstance(status, int):
        if status in (404, 410):
            return "not_found"
        if status in (401, 403):
            return "auth_required"
        if status == 429 or status >= 500:
            return "network"
    names = {cls.__name__ for cls in type(cause).__mro__}
    if names & {"TransportError", "ConnectionError", "TimeoutError", "ContentTooShortError"}:
        return "network"
    return "download_failed"


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (0-based): ``base * 2**attempt``, capped."""
    return min(cap, base * 2**attempt)


class DownloadConfig(StageConfig):
    """Config of the download stage (section ``download``); None means "not set"."""

    min_height: int = Field(720, ge=0, description="prefer video at least this tall (pixels)")
    format: str | None = Field(None, description="explicit yt-dlp format; overrides min_height")
    retries: int = Field(3, ge=0, description="extra attempts after a network-class failure")
    backoff_seconds: float = Field(2.0, ge=0, description="wait before the first retry (s)")
    max_backoff_seconds: float = Field(60.0, ge=0, description="longest wait between retries (s)")
    socket_timeout: float = Field(30.0, gt=0, description="network inactivity timeout (s)")
    rate_limit: str | None = Field(None, description="max download rate, e.g. '2M' (bytes/s)")
    sleep_interval: float | None = Field(None, ge=0, description="pause before a download (s)")
    cookies: str | None = Field(None, description="Netscape cookies.txt for sites needing login")
    archive: str | None = Field(None, description="yt-dlp archive file; relative to --out")
    use_ranges: bool = Field(True, description="download only the manifest's start/end range")
    min_duration: float = Field(1.0, ge=0, description="shortest acceptable media (s)")
    require_audio: bool = Field(True, description="fail with no_audio without an audio stream")
    require_video: bool = Field(True, description="fail with no_video without a video stream")
    quiet: bool = Field(True, description="log yt-dlp messages at DEBUG instead of INFO")

    @field_validator("rate_limit")
    @classmethod
    def _check_rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value


class _YtdlpLog:
    """A yt-dlp ``logger``: keeps every message and forwards it to the stage log, never stdout."""

    def __init__(self, log: logging.Logger, quiet: bool):
        self.log, self.quiet, self.messages = log, quiet, []

    def _keep(self, level: int, message: str) -> None:
        self.messages.append(message)
        self.log.log(logging.DEBUG if self.quiet else level, "yt-dlp: %s", message)

    def debug(self, message: str) -> None:
        self._keep(logging.INFO, message)

    info = debug

    def warning(self, message: str) -> None:
        self._keep(logging.WARNING, message)

    def error(self, message: str) -> None:
        self._keep(logging.DEBUG, message)  # errors come back as exceptions too


def format_selector(config: DownloadConfig) -> str:
    """yt-dlp format: best video >= ``min_height`` + best audio, else the best there is."""
    if config.format:
        return config.format
    height = config.min_height
    return f"bv*[height>={height}]+ba/b[height>={height}]/bv*+ba/b"


def ytdlp_options(config: DownloadConfig, out_dir: Path, logger: _YtdlpLog,
                  archive: set[str] | None, time_range: tuple[float, float] | None) -> dict:
    """The ``YoutubeDL`` options for one download into ``out_dir/source.<ext>``."""
    from yt_dlp.utils import download_range_func

    opts: dict[str, Any] = {
        "paths": {"home": str(out_dir)}, "outtmpl": "source.%(ext)s", "noplaylist": True,
        "noprogress": True, "quiet": True, "logger": logger, "format": format_selector(config),
        "retries": config.retries, "fragment_retries": config.retries,
        "socket_timeout": config.socket_timeout}
    if config.rate_limit is not None:
        opts["ratelimit"] = parse_rate(config.rate_limit)
    if config.sleep_interval is not None:
        opts["sleep_interval"] = config.sleep_interval
    if config.cookies is not None:
        opts["cookiefile"] = str(Path(config.cookies).expanduser())
    if archive is not None:
        opts["download_archive"] = archive  # a set: yt-dlp checks it, we record in it ourselves
    if time_range is not None:
        opts["download_ranges"] = download_range_func(None, [time_range])
        opts["force_keyframes_at_cuts"] = True
    return opts


def validate_media(path: Path, config: DownloadConfig, source_id: str,
                   origin: str | None = None) -> MediaInfo:
    """Probe ``path`` and raise the StageFailure that says why it is unusable, if it is.

    ``origin`` names the file in messages (the manifest's path or URL); default: ``path``'s name.
    """
    where = f"source {source_id}: {origin or path.name}"
    if path.stat().st_size == 0:
        raise StageFailure("corrupt_media", f"{where} is empty (0 bytes), expected a video file; "
                           "an interrupted copy or download leaves such files: fetch it again")
    try:
        info = probe(path)
    except UnreadableMedia as e:
        raise StageFailure("corrupt_media", f"{where} is not readable media (ffprobe: "
                           f"{e.detail}); check that it is a complete video file") from e
    if config.require_video and not info.has_video:
        raise StageFailure("no_video", f"{where} has no video stream, but a video with two faces "
                           "is needed; use a video source or set download.require_video=false")
    if config.require_audio and not info.has_audio:
        raise StageFailure("no_audio", f"{where} has no audio stream, but speech is needed; use a "
                           "source with sound or set download.require_audio=false")
    if info.duration < config.min_duration:
        raise StageFailure("too_short", f"{where} lasts {info.duration:.2f} s, expected at least "
                           f"{config.min_duration:g} s (download.min_duration); check the "
                           "manifest's start/end")
    return info


def _archive_path(config: DownloadConfig, root: Path | None) -> Path | None:
    if config.archive is None:
        return None
    path = Path(config.archive).expanduser()
    return path if path.is_absolute() else Path(root or ".") / path


def read_archive(path: Path | None, log: logging.Logger = _log) -> set[str] | None:
    """The ids in a download archive (one ``"<extractor> <id>"`` per line); None without one.

    A last line without its newline is what a writer killed mid-line leaves (or another tool
    that wrote a part of a line): it is ignored with a warning, so that source is downloaded
    again rather than skipped on a garbled id.
    """
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return set()
    lines = data.split(b"\n")
    torn = lines.pop()  # what follows the last newline: empty when the file ends with one
    if torn.strip():
        log.warning("download archive %s: its last line %r has no newline (a write was cut "
                    "short); ignored it. If it is a whole id, end the file with a newline",
                    path, torn.decode("utf-8", errors="replace")[:200])
    return {line.decode("utf-8", errors="replace").strip() for line in lines if line.strip()}


def record_archive(path: Path, archive_id: str) -> None:
    """Append ``archive_id`` to the download archive as one whole line, flushed to disk.

    Safe with several workers (processes or machines sharing the file) and against kills: the
    line goes out in one ``os.write`` on an ``O_APPEND`` descriptor under an exclusive ``flock``
    (the lock yt-dlp takes on its archive too), and when the file ends in a torn line the new
    line starts with a newline, so an id never joins a fragment.

    Raises:
        OSError: the file cannot be written (ENOSPC also for a short write).
    """
    if not archive_id or any(c in archive_id for c in "\r\n"):
        raise ValueError(f"archive id {archive_id!r} must be one non-empty line")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        line = (b"\n" if torn else b"") + archive_id.encode("utf-8") + b"\n"
        if os.write(fd, line) != len(line):
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (short write)", str(path))
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


_HINTS = {
    "not_found": "check the URL in the manifest",
    "network": "check the connection; the next build retries network failures",
    "unavailable": "the video is private, removed or not live yet; drop it from the manifest",
    "geo_blocked": "it is blocked in this region; build from a region where it is available",
    "auth_required": "export cookies of a logged-in browser to a cookies.txt file and set "
                     "download.cookies to it",
    "unsupported_url": "yt-dlp has no extractor for it; give a direct media link or a local path",
    "download_failed": "if the site changed, upgrading yt-dlp often helps (pip install -U yt-dlp)",
}


def _extract(source: SourceEntry, opts: dict, logger: _YtdlpLog) -> dict:
    """Run yt-dlp once; return its info dict or raise a StageFailure with a reason code."""
    import yt_dlp
    from yt_dlp.utils import YoutubeDLError

    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(source.url, download=True)
    except (YoutubeDLError, OSError) as e:
        reason = error_reason(e)
        detail = str(e).removeprefix("ERROR: ")
        raise StageFailure(reason, f"source {source.id}: could not download {source.url} "
                           f"({reason}): {detail}; {_HINTS[reason]}") from e
    if any(_ARCHIVE_HIT in message for message in logger.messages):
        raise StageFailure("in_archive", f"source {source.id}: yt-dlp skipped {source.url} because "
                           "its id is already in the download archive (download.archive); to "
                           "download it again, delete its line from the archive file or unset "
                           "download.archive")
    if not info or not info.get("requested_downloads"):
        last = logger.messages[-1] if logger.messages else "no message"
        raise StageFailure("download_failed", f"source {source.id}: yt-dlp wrote no file for "
                           f"{source.url} (last message: {last})")
    return info


def _downloaded_file(info: dict, out_dir: Path, source_id: str) -> Path:
    paths = [Path(d["filepath"]) for d in info["requested_downloads"] if d.get("filepath")]
    found = [p for p in paths if p.is_file()] or sorted(
        p for p in out_dir.glob("source.*") if p.suffix not in (".part", ".ytdl", ".temp"))
    if not found:
        raise StageFailure("download_failed", f"source {source_id}: yt-dlp reported success but "
                           f"no source.* file is in {out_dir}")
    return found[-1]


def _time_range(source: SourceEntry) -> tuple[float, float] | None:
    """The manifest's (start, end) in seconds (end ``inf`` when open), or None when unset."""
    if source.start is None and source.end is None:
        return None
    return (source.start or 0.0, source.end if source.end is not None else float("inf"))


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


class DownloadStage(Stage):
    """Fetch a source's media to ``source.<ext>``, probe it, and reject unusable files."""

    name = "download"
    version = "1"
    unit = "source"
    requires = ()
    resources: ClassVar[dict[str, float]] = {"CPU": 1}
    Config = DownloadConfig

    def input_fingerprint(self, source: SourceEntry, config: DownloadConfig) -> dict[str, Any]:
        """Size and mtime (ns) of a local file, so that replacing it redoes the download."""
        if source.path is None:
            return {}
        try:
            stat = os.stat(source.path)
        except OSError:
            return {"missing": True}
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Download or link the media, validate it, and return the meta described in the docs."""
        config: DownloadConfig = ctx.config
        if ctx.source.path is not None:
            (path, meta), info = self._local(ctx), {}
        else:
            info, meta = self._remote(ctx)
            path = _downloaded_file(info, ctx.out_dir, ctx.source.id)
        media = validate_media(path, config, ctx.source.id, ctx.source.location)
        meta.update(file=path.name, probe=media.to_dict(), bytes=path.stat().st_size,
                    format_fallback=None if config.format else media.height < config.min_height)
        archive = _archive_path(config, ctx.root)
        if archive is not None and info:
            from yt_dlp.utils import make_archive_id

            meta["archive_id"] = make_archive_id(info["extractor_key"], info["id"])
            record_archive(archive, meta["archive_id"])
        return meta

    def _local(self, ctx: StageContext) -> tuple[Path, dict[str, Any]]:
        src = Path(ctx.source.path)
        if not src.is_file():
            raise StageFailure("not_found", f"source {ctx.source.id}: local file {src} does not "
                               "exist or is not a file; fix 'path' in the manifest (relative "
                               "paths are resolved against the manifest's folder)")
        dst = ctx.out_dir / f"source{src.suffix.lower()}"
        try:
            os.link(src, dst)
            linked = True
        except OSError:  # another file system, or links not allowed: copy instead
            shutil.copy2(src, dst)
            linked = False
        return dst, {"origin": "local", "path": str(src), "linked": linked, "url": None,
                     "title": src.stem, "extractor": None, "video_id": None, "format_id": None,
                     "range_applied": None, "range_fallback": None}

    def _remote(self, ctx: StageContext) -> tuple[dict, dict[str, Any]]:
        config, source = ctx.config, ctx.source
        if config.cookies is not None and not Path(config.cookies).expanduser().is_file():
            raise UsageError(f"download.cookies: cookies file {config.cookies} not found (needed "
                             f"for source {source.id}); expected a Netscape-format cookies.txt; "
                             "fix the path or unset download.cookies")
        archive = read_archive(_archive_path(config, ctx.root), ctx.log)
        time_range = _time_range(source) if config.use_ranges else None
        range_fallback = None
        try:
            info = self._fetch(ctx, archive, time_range)
        except StageFailure as failure:
            if time_range is None or failure.reason != "download_failed":
                raise
            ctx.log.warning("source %s: ranged download failed, downloading it whole: %s",
                            source.id, failure.message)
            _empty(ctx.out_dir)
            time_range, range_fallback = None, failure.message
            info = self._fetch(ctx, archive, None)
        return info, {
            "origin": "http" if info.get("extractor_key") == "Generic" else "yt-dlp",
            "url": source.url, "path": None, "title": info.get("title"),
            "extractor": info.get("extractor"), "video_id": info.get("id"),
            "format_id": info.get("format_id"),
            "range_applied": None if time_range is None else [time_range[0], source.end],
            "range_fallback": range_fallback}

    def _fetch(self, ctx: StageContext, archive: set[str] | None,
               time_range: tuple[float, float] | None) -> dict:
        """yt-dlp with up to ``retries`` extra attempts after network failures, backing off."""
        config: DownloadConfig = ctx.config
        for attempt in itertools.count():
            logger = _YtdlpLog(ctx.log, config.quiet)
            opts = ytdlp_options(config, ctx.out_dir, logger, archive, time_range)
            try:
                return _extract(ctx.source, opts, logger)
            except StageFailure as failure:
                if failure.reason != "network" or attempt >= config.retries:
                    raise
                delay = backoff_delay(attempt, config.backoff_seconds, config.max_backoff_seconds)
                ctx.log.warning("source %s: %s; retry %d of %d in %.1f s", ctx.source.id,
                                failure.message, attempt + 1, config.retries, delay)
            _sleep(delay)
