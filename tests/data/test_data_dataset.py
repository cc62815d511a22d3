"""ResponseNetDataset: exact windows and values against the rows make_tiny_corpus wrote."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from data_fixtures import N_CLIPS, N_FRAMES, ROLES, expected_track, ramp

from responsenet.chrono import frame_of
from responsenet.data import ChronoVocab, ResponseNetDataset
from responsenet.data.clips import ClipStore
from responsenet.errors import UsageError
from responsenet.schema import ShardFormatError
from responsenet.shards import read_track_records, write_tracks
from responsenet.testing.corpus import SPLITS, clip_id_for, make_tiny_corpus

FACE_CHRONO = ("face", "chrono")
ALL_BUT_VIDEO = ("face", "chrono", "words", "audio")
INDEX = {clip_id_for(i): i for i in range(N_CLIPS)}


def _split_order() -> list[int]:
    """Clip indices in the dataset's order for split=None: splits by name, then clip id."""
    return sorted(range(N_CLIPS), key=lambda i: (SPLITS[i % 3], clip_id_for(i)))


def test_windows_cover_each_clip_in_order(corpus):
    ds = ResponseNetDataset(corpus, window_frames=32, modalities=FACE_CHRONO)
    per_clip = [(0, 32), (32, 32), (64, 32), (96, 4)]
    assert ds.windows() == [(clip_id_for(i), s, n) for i in _split_order() for s, n in per_clip]
    assert len(ds) == N_CLIPS * 4


@pytest.mark.parametrize(("stride", "drop_last", "expected"), [
    (32, True, [(0, 32), (32, 32), (64, 32)]),
    (16, False, [(s, 32) for s in range(0, 65, 16)] + [(80, 20)]),
    (40, False, [(0, 32), (40, 32), (80, 20)]),
    (None, False, [(0, 32), (32, 32), (64, 32), (96, 4)]),
])
def test_stride_and_drop_last(corpus, stride, drop_last, expected):
    ds = ResponseNetDataset(corpus, "val", 32, stride, FACE_CHRONO, drop_last=drop_last)
    assert ds.windows() == [(clip_id_for(i), s, n) for i in (1, 4) for s, n in expected]


def test_split_selects_its_clips(corpus):
    for k, split in enumerate(SPLITS):
        ds = ResponseNetDataset(corpus, split, 200, modalities=("face",))
        assert [w[0] for w in ds.windows()] == [clip_id_for(k), clip_id_for(k + 3)]
        assert {ds[i]["split"] for i in range(len(ds))} == {split}


def test_items_hold_the_exact_aligned_values(corpus):
    vocab = ChronoVocab.from_corpus(corpus, split=None)
    ds = ResponseNetDataset(corpus, window_frames=32, stride_frames=24, modalities=ALL_BUT_VIDEO,
                            vocab=vocab)
    for index in range(len(ds)):
        item = ds[index]
        i, start, n = INDEX[item["clip_id"]], item["start_frame"], item["n_frames"]
        assert (item["fps"], item["target"]) == (25.0, "listener")
        frames = slice(start, start + n)
        for role in ROLES:
            row = expected_track(i, role)
            face = np.concatenate([row["blendshapes"], row["pose"]], axis=1)[frames]
            assert item[f"{role}_face"].dtype == torch.float32
            assert torch.equal(item[f"{role}_face"], torch.from_numpy(face))
            assert torch.equal(item[f"{role}_face_mask"],
                               torch.from_numpy(row["face_present"][frames]))
            assert torch.equal(item[f"{role}_vad"], torch.from_numpy(row["vad"][frames]))
            assert item[f"{role}_chrono"].dtype == torch.int64
            assert vocab.decode(item[f"{role}_chrono"]) == row["chrono"][frames]
            audio = ramp(i, role, N_FRAMES * 640)[start * 640:(start + n) * 640]
            assert item[f"{role}_audio"].shape == (n * 640,)
            assert torch.equal(item[f"{role}_audio"],
                               torch.from_numpy(audio.astype(np.float32) / 32767.0))
            assert item[f"{role}_words"] == _words_in(row["words"], start, n)


def _words_in(words: list[dict], start: int, n: int) -> list[dict]:
    return [{"text": w["text"], "start": w["start"] - start / 25, "end": w["end"] - start / 25,
             "prob": w["prob"]} for w in words if start <= frame_of(w["start"], 25.0) < start + n]


def test_words_have_window_relative_times(corpus):
    ds = ResponseNetDataset(corpus, "train", 50, modalities=("words",))
    # make_track spreads 2 words over the clip: onsets at 0 s and 2 s (frame 50)
    first, second = ds[0], ds[1]
    assert [w["start"] for w in first["speaker_words"]] == [0.0]
    assert [w["start"] for w in second["speaker_words"]] == [0.0]
    assert second["speaker_words"][0]["end"] == pytest.approx(0.02)
    assert sum(len(ds[k]["listener_words"]) for k in range(len(ds))) == 4


def test_speaker_and_listener_are_aligned_on_the_same_frames(corpus):
    ds = ResponseNetDataset(corpus, "test", 10, modalities=("face",))
    item = ds[3]
    records = {r.role: r for r in read_track_records(corpus / "shards/test/tracks-00000.parquet")
               if r.clip_id == item["clip_id"]}
    for role in ROLES:
        assert torch.equal(item[f"{role}_face"][:, :52],
                           torch.from_numpy(records[role].blendshapes[30:40]))


def test_only_requested_modalities_are_read(corpus):
    item = ResponseNetDataset(corpus, "train", 16, modalities=("face",))[0]
    assert sorted(item) == sorted(["clip_id", "split", "start_frame", "n_frames", "fps", "target",
                                   *(f"{r}_{k}" for r in ROLES
                                     for k in ("face", "face_mask", "vad"))])
    assert ResponseNetDataset(corpus, "train", 16, modalities=("face",)).vocab is None


def test_target_role(corpus):
    ds = ResponseNetDataset(corpus, "train", 16, modalities=("face",), target_role="speaker")
    assert ds[0]["target"] == "speaker"
    with pytest.raises(UsageError, match="target_role must be one of"):
        ResponseNetDataset(corpus, "train", 16, modalities=("face",), target_role="both")


def test_bad_arguments_say_what_is_known(corpus):
    with pytest.raises(UsageError, match="unknown modality 'fase'. Did you mean 'face'"):
        ResponseNetDataset(corpus, "train", modalities=("fase",))
    with pytest.raises(UsageError, match=r"no shards for split 'trian'\. Did you mean 'train'\?"
                                         r" Available splits: test, train, val"):
        ResponseNetDataset(corpus, "trian", modalities=("face",))
    with pytest.raises(IndexError):
        ResponseNetDataset(corpus, "train", 50, modalities=("face",))[4]


def test_vocab_defaults_to_the_train_split_and_loads_from_json(corpus, tmp_path):
    ds = ResponseNetDataset(corpus, "val", 32, modalities=("chrono",))
    assert ds.vocab == ChronoVocab.from_corpus(corpus, "train")
    path = ChronoVocab.build([["zebra"]]).save(tmp_path / "vocab.json")
    item = ResponseNetDataset(corpus, "val", 32, modalities=("chrono",), vocab=path)[0]
    assert set(item["speaker_chrono"].tolist()) <= {1, 2, 3}  # words unknown to this vocab


def test_each_clip_is_read_once_in_order(corpus, monkeypatch):
    loads = []
    original = ClipStore.load
    monkeypatch.setattr(ClipStore, "load", lambda self, ref: loads.append(ref.clip_id)
                        or original(self, ref))
    ds = ResponseNetDataset(corpus, window_frames=10, modalities=FACE_CHRONO, cache_clips=2)
    for index in range(len(ds)):
        ds[index]
    assert loads == [clip_id_for(i) for i in _split_order()]


def test_each_clip_is_one_row_group(corpus):
    clips = ResponseNetDataset(corpus, "train", modalities=("face",)).clips
    assert [(c.clip_id, c.row_groups, c.n_frames) for c in clips] == [
        (clip_id_for(0), (0,), N_FRAMES), (clip_id_for(3), (1,), N_FRAMES)]


def test_clips_sharing_a_row_group_are_read_apart(tmp_path):
    root = make_tiny_corpus(tmp_path / "c", n_clips=6, n_frames=20)
    path = root / "shards/train/tracks-00000.parquet"
    write_tracks(read_track_records(path), path, row_group_size=4)  # both clips in one group
    ds = ResponseNetDataset(root, "train", 20, modalities=("face",))
    assert [c.row_groups for c in ds.clips] == [(0,), (0,)]
    for index, i in enumerate((0, 3)):
        row = expected_track(i, "listener", 20)
        assert np.array_equal(ds[index]["listener_face"][:, :52].numpy(), row["blendshapes"])


def test_pickles_after_use_for_spawned_workers(corpus):
    ds = ResponseNetDataset(corpus, "train", 32, modalities=FACE_CHRONO)
    first = ds[0]
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy[0]["listener_face"], first["listener_face"])


def test_item_tensors_do_not_share_the_cache(corpus):
    ds = ResponseNetDataset(corpus, "train", 32, modalities=("face",))
    ds[0]["speaker_face"].zero_()
    assert ds[0]["speaker_face"].abs().sum() > 0


def test_other_format_version_is_refused(tmp_path):
    root = make_tiny_corpus(tmp_path / "c", n_clips=1, n_frames=5)
    path = root / "shards/train/tracks-00000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({b"responsenet.format_version": b"2"}), path)
    with pytest.raises(ShardFormatError, match="format version 2"):
        ResponseNetDataset(root, modalities=("face",))


def test_a_clip_without_its_listener_is_refused(tmp_path):
    root = make_tiny_corpus(tmp_path / "c", n_clips=1, n_frames=5)
    path = root / "shards/train/tracks-00000.parquet"
    table = pq.read_table(path)
    keep = pa.compute.equal(table.column("role"), "speaker")
    pq.write_table(table.filter(keep), path)
    with pytest.raises(ShardFormatError, match=r"has tracks \['speaker'\]"):
        ResponseNetDataset(root, modalities=("face",))


def test_audio_at_another_rate_is_refused(tmp_path, corpus):
    root = tmp_path / "c"
    shutil.copytree(corpus, root)
    wav = root / "media" / clip_id_for(0) / "speaker.wav"
    import wave

    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * 100)
    ds = ResponseNetDataset(root, "train", 32, modalities=("audio",))
    with pytest.raises(UsageError, match="8000 Hz, 16-bit; expected 16000 Hz"):
        ds[0]


def test_audio_past_the_end_of_the_file_is_zero(tmp_path, corpus):
    root = tmp_path / "c"
    shutil.copytree(corpus, root)
    from data_fixtures import write_ramp_wavs

    write_ramp_wavs(root, N_CLIPS, N_FRAMES - 2)  # files 2 frames short
    item = ResponseNetDataset(root, "train", 32, modalities=("audio",))[3]  # frames 96..99
    audio = item["listener_audio"]
    assert audio.shape == (4 * 640,)
    assert torch.equal(audio[2 * 640:], torch.zeros(2 * 640))
    assert audio[: 2 * 640].abs().sum() > 0
