"""The model plugin contract: loading by import path, arguments, and output checks."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from responsenet.errors import UsageError
from responsenet.eval import (
    ListenerChunk,
    ResponseModel,
    SpeakerChunk,
    check_output,
    load_model,
    parse_model_args,
)


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A user package ``mypkg.models`` on sys.path with good and bad models."""
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(textwrap.dedent('''
        import numpy as np
        from responsenet.eval import ListenerChunk, ResponseModel

        class Still(ResponseModel):
            outputs = frozenset({"face", "text"})

            def __init__(self, value=0.0):
                self.value = value

            def step(self, obs):
                face = np.full((obs.n_frames, 64), self.value, np.float32)
                return ListenerChunk(face=face, chrono=["[PAUSE]"] * obs.n_frames)

        class Built:
            fps, sample_rate, outputs, chunk_frames = 25, 16000, {"face"}, 4

            @classmethod
            def from_args(cls, scale=1):
                obj = cls()
                obj.scale = scale
                return obj

            def reset(self, clip):
                pass

            def step(self, obs):
                return ListenerChunk(face=np.zeros((obs.n_frames, 64), np.float32))

        class NotAModel:
            pass
    '''))
    (package / "broken.py").write_text("import does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "mypkg"
    for name in [m for m in sys.modules if m.startswith("mypkg")]:
        del sys.modules[name]


def chunk(start: int = 0, n: int = 4) -> SpeakerChunk:
    return SpeakerChunk(start, n, np.zeros(n * 640, np.float32), np.zeros((n, 64), np.float32),
                        np.ones(n, bool), ["[PAUSE]"] * n)


def test_load_by_import_path_with_arguments(plugin):
    model = load_model("mypkg.models:Still", parse_model_args("value=0.5"))
    out = model.step(chunk())
    assert out.face.shape == (4, 64) and out.face[0, 0] == 0.5
    assert check_output(out, model, chunk(), "c") == []
    built = load_model("mypkg.models:Built", {"scale": 3})
    assert built.scale == 3 and built.chunk_frames == 4


@pytest.mark.parametrize("spec, fragment", [
    ("mypkg.models", "expects pkg.module:Class"),
    ("mypkg.broken:X", "ModuleNotFoundError"),
    ("mypkg.models:Missing", "has no attribute 'Missing'"),
    ("mypkg.models:NotAModel", "is not a ResponseModel: it lacks reset, step"),
])
def test_loading_errors_name_the_problem(plugin, spec, fragment):
    with pytest.raises(UsageError, match=fragment):
        load_model(spec)


def test_bad_constructor_arguments_are_named(plugin):
    with pytest.raises(UsageError, match="--model-args"):
        load_model("mypkg.models:Still", {"colour": 1})


def test_parse_model_args_types():
    assert parse_model_args("a=1,b=0.5,c=true,d=x") == {"a": 1, "b": 0.5, "c": True, "d": "x"}
    assert parse_model_args(None) == {}
    with pytest.raises(UsageError):
        parse_model_args("novalue")


def test_output_checks_name_clip_and_frame():
    class Face(ResponseModel):
        outputs = frozenset({"face", "audio", "text"})

    obs = chunk(start=40, n=4)
    wrong = ListenerChunk(face=np.zeros((3, 64)), audio=np.zeros(2560), chrono=["a"] * 5)
    problems = check_output(wrong, Face(), obs, "clip7")
    assert problems == ["clip clip7 frame 40: face has shape (3, 64), expected (4, 64)",
                        "clip clip7 frame 40: chrono has 5 tokens, expected 4"]
    missing = check_output(ListenerChunk(face=np.zeros((4, 64))), Face(), obs, "clip7")
    assert "declares 'audio' but step returned no audio" in missing[0]
    nan = ListenerChunk(face=np.full((4, 64), np.nan), audio=np.zeros(2560), chrono=["a"] * 4)
    assert check_output(nan, Face(), obs, "c") == ["clip c frame 40: face holds NaN or infinite "
                                                   "values"]
    assert "expected a ListenerChunk" in check_output({}, Face(), obs, "c")[0]
