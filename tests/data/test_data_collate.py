"""collate: padding to the longest window, masks, and what passes through unpadded."""

from __future__ import annotations

import pytest
import torch

from responsenet.data import ResponseNetDataset, collate
from responsenet.data.vocab import ChronoVocab


@pytest.fixture(scope="module")
def items(corpus):
    ds = ResponseNetDataset(corpus, "train", 32, modalities=("face", "chrono", "words", "audio"))
    return [ds[2], ds[3]]  # frames 64..95 (32) and 96..99 (4) of clip 0


def test_pads_to_the_longest_window_with_masks(items):
    batch = collate(items)
    assert batch["speaker_face"].shape == (2, 32, 64)
    assert batch["listener_chrono"].shape == (2, 32)
    assert batch["speaker_audio"].shape == (2, 32 * 640)
    expected_mask = torch.tensor([[True] * 32, [True] * 4 + [False] * 28])
    for role in ("speaker", "listener"):
        assert torch.equal(batch[f"{role}_frame_mask"], expected_mask)
        assert torch.equal(batch[f"{role}_audio_mask"],
                           expected_mask.repeat_interleave(640, dim=1))
        assert torch.equal(batch[f"{role}_face"][1, :4], items[1][f"{role}_face"])
        assert torch.equal(batch[f"{role}_face"][0], items[0][f"{role}_face"])
        assert not batch[f"{role}_face"][1, 4:].any()
        assert not batch[f"{role}_face_mask"][1, 4:].any()
        assert torch.equal(batch[f"{role}_chrono"][1, 4:],
                           torch.full((28,), ChronoVocab.pad_id))
        assert torch.equal(batch[f"{role}_audio"][1, : 4 * 640], items[1][f"{role}_audio"])
        assert not batch[f"{role}_audio"][1, 4 * 640:].any()


def test_scalars_become_tensors_and_strings_lists(items):
    batch = collate(items)
    assert torch.equal(batch["start_frame"], torch.tensor([64, 96]))
    assert torch.equal(batch["n_frames"], torch.tensor([32, 4]))
    assert batch["fps"].dtype == torch.float64
    assert batch["clip_id"] == [items[0]["clip_id"]] * 2
    assert batch["target"] == ["listener", "listener"]
    assert batch["speaker_words"] == [items[0]["speaker_words"], items[1]["speaker_words"]]


def test_pad_to_frames_fixes_the_shape(items):
    batch = collate(items[1:], pad_to_frames=32)
    assert batch["listener_face"].shape == (1, 32, 64)
    assert batch["listener_audio"].shape == (1, 32 * 640)
    assert batch["listener_frame_mask"].sum() == 4
    with pytest.raises(ValueError, match="more than pad_to_frames=16"):
        collate(items, pad_to_frames=16)


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="at least one item"):
        collate([])
