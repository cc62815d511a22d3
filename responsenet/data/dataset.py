"""Map-style PyTorch dataset over fixed-length windows of a corpus's clips."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from responsenet.data.clips import ClipStore
from responsenet.data.index import scan_clips, window_starts
from responsenet.data.items import (
    MODALITIES,
    WindowReader,
    check_modalities,
    check_role,
    resolve_vocab,
    window_table,
)
from responsenet.data.vocab import ChronoVocab


class ResponseNetDataset(torch.utils.data.Dataset):
    """Windows of every clip of a split, speaker and listener aligned frame by frame.

    Windows of ``window_frames`` frames start every ``stride_frames`` frames (see
    ``responsenet.data.index.window_starts``); the last window of a clip ends at the clip's end
    and may be shorter (``n_frames < window_frames``) unless ``drop_last``. Item tensors have
    the window's own length; ``responsenet.data.collate`` pads a batch to its longest window.

    Item dict (legend: T = ``n_frames`` of the window, S = ``T * 16000 / fps`` audio samples,
    i.e. ``T * 640`` at 25 fps, H x W = video frame size, W_r = words of role r; ``{r}`` is
    ``speaker`` and ``listener``):

    - ``clip_id``: str; ``split``: str; ``fps``: float, frames/s.
    - ``start_frame``: int, the window's first frame in the clip; ``n_frames``: int, T.
    - ``target``: str, the role to generate (``target_role``); the other role is the context.
    - ``{r}_vad``: bool [T], the participant speaks (always present).
    - ``{r}_face``: float32 [T, 64], 52 blendshapes (``BLENDSHAPE_NAMES``) then 12 pose values
      (``POSE_FIELDS``); ``{r}_face_mask``: bool [T], a face was detected (``face_present``).
      ("face")
    - ``{r}_chrono``: int64 [T], Chrono-Text token ids of ``vocab``. ("chrono")
    - ``{r}_words``: list of W_r dicts ``{text, start, end, prob}``, the words whose onset frame
      is in the window, times in seconds from the window start. ("words")
    - ``{r}_audio``: float32 [S], samples ``[start_frame * 640, (start_frame + T) * 640)`` of
      ``media/{clip}/{r}.wav`` at 16 kHz (zeros past the file's end). ("audio")
    - ``{r}_video``: uint8 [T, H, W, 3], RGB frames of ``media/{clip}/{r}.mp4``. ("video";
      decoded with ffmpeg per item: slow, and 1024 x 1024 frames are 3 MiB each, so set
      ``video_size``.)

    Args:
        root: corpus folder (docs/format.md).
        split: split folder to read (``train``, ``val``, ``test``, ...); None reads every split.
        window_frames: frames per window.
        stride_frames: frames between window starts; None = ``window_frames`` (no overlap).
        modalities: any of ``face``, ``chrono``, ``words``, ``audio``, ``video``.
        target_role: ``listener`` (default) or ``speaker``.
        drop_last: drop each clip's last window when it is shorter than ``window_frames``.
        vocab: Chrono-Text vocabulary, or the path of one saved with ``ChronoVocab.save``; None
            builds one from the corpus's ``train`` split. Pass the training vocabulary to every
            split so that ids agree.
        cache_clips: decoded clips kept per process (an LRU). In index order each clip is read
            from its row group once; in random order (``shuffle=True``) a window whose clip is
            not cached reads it again, so for random access size this to the split (face +
            chrono: about 530 bytes per frame of both tracks, 680 MB for 14.2 h at 25 fps) or
            use ``ResponseNetStream``.
        video_size: ``(width, height)`` to scale video frames to; None keeps the file's size.

    Raises:
        UsageError: no shards for ``split``, an unknown modality or role.
        ShardFormatError: a shard has another format version or a clip lacks a track.
    """

    def __init__(self, root: str | Path, split: str | None = None, window_frames: int = 256,
                 stride_frames: int | None = None, modalities: Iterable[str] = MODALITIES,
                 target_role: str = "listener", *, drop_last: bool = False,
                 vocab: ChronoVocab | str | Path | None = None, cache_clips: int = 32,
                 video_size: tuple[int, int] | None = None):
        self.root, self.split = Path(root), split
        self.window_frames, self.stride_frames = window_frames, stride_frames or window_frames
        self.modalities = check_modalities(modalities)
        self.target_role = check_role(target_role)
        self.drop_last = drop_last
        self.vocab = resolve_vocab(root, vocab, self.modalities)
        self.clips = scan_clips(root, split)
        starts = [window_starts(ref.n_frames, window_frames, self.stride_frames, drop_last)
                  for ref in self.clips]
        self._clip_index, self._start, self._n = window_table(self.clips, starts, window_frames)
        self._reader = WindowReader(ClipStore(root, self.modalities, self.vocab, cache_clips),
                                    self.target_role, video_size)

    def __len__(self) -> int:
        return len(self._start)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        ref = self.clips[int(self._clip_index[index])]
        return self._reader.item(self._reader.store.get(ref), int(self._start[index]),
                                 int(self._n[index]))

    def windows(self) -> list[tuple[str, int, int]]:
        """``(clip_id, start_frame, n_frames)`` of every window, in index order."""
        return [(self.clips[c].clip_id, int(s), int(n))
                for c, s, n in zip(self._clip_index, self._start, self._n)]
