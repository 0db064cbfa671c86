"""The Hugging Face families (wav2vec2, ast, whisper): checkpoints load from a local folder
through the same path a user's download takes, offline failures explain themselves,
freezing freezes what it says, layer mixing learns, and the in-model features match the HF
feature extractors."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    Wav2Vec2Config,
    Wav2Vec2ForPreTraining,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)

from speechstack.config import AudioConfig, ConfigError, load_config
from speechstack.models import MODELS, ModelContext, create_model
from speechstack.models.ast import AUDIOSET_MEAN, AUDIOSET_STD, KaldiFbank
from speechstack.models.pretrained import FrameHead, PretrainedLoadError
from speechstack.models.whisper import WhisperLogMel

FAMILIES = ["wav2vec2", "ast", "whisper"]
CLASS_NAMES = ("yes", "no", "unknown")
SAMPLES = 16000


def context(num_classes: int = 3) -> ModelContext:
    return ModelContext(num_classes=num_classes, class_names=CLASS_NAMES[:num_classes])


def tiny_config(family: str) -> dict:
    return dict(MODELS.get(family).tiny["config"])


def tiny(family: str, **params: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(family, context(), **{**MODELS.get(family).tiny, **params})


def waveforms(batch: int = 2, seed: int = 0) -> np.ndarray:
    """A decaying tone plus noise, and plain noise: ``(batch, SAMPLES)`` float32."""
    rng = np.random.default_rng(seed)
    time = np.arange(SAMPLES) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * time) * np.exp(-3 * time)
    clips = [tone + 0.02 * rng.standard_normal(SAMPLES)]
    clips += [0.1 * rng.standard_normal(SAMPLES) for _ in range(batch - 1)]
    return np.stack(clips).astype(np.float32)


# ------------------------------------------------------- checkpoints from a local folder


def save_checkpoint(family: str, folder: Path) -> torch.nn.Module:
    """Save a randomly initialised tiny model of the class the real checkpoint is
    (facebook/wav2vec2-base: Wav2Vec2ForPreTraining; MIT/ast-*: ASTForAudioClassification
    with 35 labels; openai/whisper-*: WhisperForConditionalGeneration)."""
    torch.manual_seed(1)
    config = tiny_config(family)
    if family == "wav2vec2":
        source = Wav2Vec2ForPreTraining(
            Wav2Vec2Config(**config, codevector_dim=16, proj_codevector_dim=16)
        )
    elif family == "ast":
        source = ASTForAudioClassification(ASTConfig(**config, num_labels=35))
        ASTFeatureExtractor(
            num_mel_bins=config["num_mel_bins"],
            max_length=config["max_length"],
            mean=-6.845978,
            std=5.5654526,
        ).save_pretrained(folder)
    else:
        whisper = {
            **config,
            "decoder_layers": 1,
            "decoder_attention_heads": 2,
            "decoder_ffn_dim": 32,
            "vocab_size": 64,
            "pad_token_id": 1,
            "bos_token_id": 2,
            "eos_token_id": 2,
            "decoder_start_token_id": 3,
            "begin_suppress_tokens": None,
            "suppress_tokens": None,
            "max_target_positions": 16,
            "max_source_positions": 100,
        }
        source = WhisperForConditionalGeneration(WhisperConfig(**whisper))
    source.save_pretrained(folder)
    return source


def backbone_weight(family: str, model: torch.nn.Module) -> torch.Tensor:
    if family == "wav2vec2":
        return model.backbone.encoder.layers[0].attention.q_proj.weight
    if family == "ast":
        return model.model.audio_spectrogram_transformer.layers[0].attention.q_proj.weight
    return model.encoder.layers[0].self_attn.q_proj.weight


def source_weight(family: str, source: torch.nn.Module) -> torch.Tensor:
    if family == "wav2vec2":
        return source.wav2vec2.encoder.layers[0].attention.q_proj.weight
    if family == "ast":
        return source.audio_spectrogram_transformer.layers[0].attention.q_proj.weight
    return source.model.encoder.layers[0].self_attn.q_proj.weight


def hf_config(family: str, model: torch.nn.Module):
    if family == "wav2vec2":
        return model.backbone.config
    if family == "ast":
        return model.model.config
    return model.encoder.config


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_folder_loads_with_this_tasks_labels(family: str, tmp_path: Path) -> None:
    source = save_checkpoint(family, tmp_path / "checkpoint")
    params: dict = {"pretrained": str(tmp_path / "checkpoint"), "config": None}
    if family == "whisper":
        params["max_source_positions"] = 50  # the saved encoder has 100 positions (2 s)
    model = create_model(family, context(), **params).eval()

    assert torch.equal(backbone_weight(family, model), source_weight(family, source))
    config = hf_config(family, model)
    assert config.num_labels == 3
    assert config.id2label == {0: "yes", 1: "no", 2: "unknown"}
    assert config.label2id == {"yes": 0, "no": 1, "unknown": 2}
    with torch.no_grad():
        logits = model(torch.from_numpy(waveforms()))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_ast_checkpoint_with_other_labels_gets_a_new_classifier(tmp_path: Path) -> None:
    save_checkpoint("ast", tmp_path / "checkpoint")  # 35 labels, as the speech-commands one
    model = create_model("ast", context(), pretrained=str(tmp_path / "checkpoint"), config=None)
    assert model.model.classifier.dense.out_features == 3


def test_ast_reads_fbank_statistics_and_matches_the_feature_extractor(tmp_path: Path) -> None:
    """The fbank statistics come from the checkpoint's preprocessor_config.json, and the
    model's input is what ASTFeatureExtractor gives for the same clips."""
    save_checkpoint("ast", tmp_path / "checkpoint")
    model = create_model("ast", context(), pretrained=str(tmp_path / "checkpoint"), config=None)
    assert (model.mean, model.std) == pytest.approx((-6.845978, 5.5654526))
    extractor = ASTFeatureExtractor.from_pretrained(tmp_path / "checkpoint")
    clips = waveforms()
    expected = extractor(list(clips), sampling_rate=16000, return_tensors="np")["input_values"]
    ours = model.eval().features(torch.from_numpy(clips)).numpy()
    assert ours.shape == expected.shape == (2, 100, 32)
    np.testing.assert_allclose(ours, expected, atol=1e-4)


# ------------------------------------------------------------------ offline failures


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub access off: the env variable, and the constant huggingface_hub read at import."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("where", ["missing folder", "hub name"])
def test_unloadable_checkpoint_says_how_to_provide_weights(
    family: str, where: str, tmp_path: Path, offline: None
) -> None:
    name = str(tmp_path / "no-such-folder") if where == "missing folder" else "nobody/no-model"
    with pytest.raises(PretrainedLoadError) as error:
        create_model(family, context(), pretrained=name, config=None)
    message = str(error.value)
    assert "--local-dir" in message and "save_pretrained" in message
    assert "model.params.pretrained=" in message


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"pretrained": "x/y", "config": {}}, "not both"),
        ({"pretrained": None, "config": None}, "set `pretrained`"),
        ({"config": {"hiden_size": 8}}, r"'hiden_size'.*valid keys: .*hidden_size"),
        ({"config": {}, "config_overrides": {"mask_prob": 0.1}}, r"'mask_prob'.*mask_time_prob"),
    ],
    ids=["both", "neither", "config-typo", "override-typo"],
)
def test_weight_source_mistakes_are_named(params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_model("wav2vec2", context(), **params)


# ------------------------------------------------------------------ freezing, layer mix


def trainable(module: torch.nn.Module) -> set[bool]:
    return {p.requires_grad for p in module.parameters()}


def test_wav2vec2_freezing() -> None:
    model = tiny("wav2vec2", freeze_feature_encoder=True, freeze_layers=1)
    backbone = model.backbone
    assert trainable(backbone.feature_extractor) == {False}
    assert trainable(backbone.feature_projection) == {False}
    assert trainable(backbone.encoder.layers[0]) == {False}
    assert trainable(backbone.encoder.layers[1]) == {True}
    assert trainable(model.classifier) == {True}
    assert trainable(tiny("wav2vec2").backbone.feature_extractor) == {True}


def test_ast_freezing() -> None:
    base = tiny("ast", freeze_layers=1).model.audio_spectrogram_transformer
    assert trainable(base.embeddings) == {False}
    assert trainable(base.layers[0]) == {False}
    assert trainable(base.layers[1]) == {True}


def test_whisper_freezing() -> None:
    encoder = tiny("whisper", freeze_layers=1).encoder
    assert trainable(encoder.conv1) == trainable(encoder.conv2) == {False}
    assert trainable(encoder.layers[0]) == {False}
    assert trainable(encoder.layers[1]) == {True}
    probe = tiny("whisper", freeze_encoder=True)
    assert trainable(probe.encoder) == {False}
    assert trainable(probe.head) == trainable(probe.classifier) == {True}


def test_ast_patch_pooling_replaces_the_token_head() -> None:
    model = tiny("ast", pooling="attention")
    assert trainable(model.model.classifier) == {False}  # unused, so no gradient expected
    model(torch.from_numpy(waveforms())).logsumexp(dim=1).mean().backward()
    assert all(p.grad is not None for p in model.token_classifier.parameters())


def test_freezing_more_layers_than_exist_is_an_error() -> None:
    with pytest.raises(ValueError, match="freeze_layers=5 but the encoder has 2 layers"):
        tiny("wav2vec2", freeze_layers=5)


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_weighted_layer_sum_weights_learn(family: str) -> None:
    model = tiny(family, weighted_layer_sum=True)
    weights = model.layer_sum.weights
    assert weights.shape == (3,)  # embedding output + 2 layers
    model(torch.from_numpy(waveforms())).logsumexp(dim=1).mean().backward()
    assert weights.grad is not None and weights.grad.abs().sum() > 0


# ------------------------------------------------------------------ heads and masks


@pytest.mark.parametrize("kind", ["linear", "cnn", "lstm"])
def test_frame_head_ignores_padded_frames(kind: str) -> None:
    """Changing what sits in padded frames does not change the valid frames' output."""
    torch.manual_seed(0)
    head = FrameHead(kind, 8, 6).eval()
    frames = torch.randn(2, 10, 8)
    mask = torch.arange(10) < torch.tensor([[7], [10]])
    noisy = torch.where(mask.unsqueeze(-1), frames, torch.randn_like(frames) * 100)
    with torch.no_grad():
        clean_out, noisy_out = head(frames, mask), head(noisy, mask)
    assert clean_out.shape == (2, 10, 6)
    assert torch.allclose(clean_out[mask], noisy_out[mask], atol=1e-5)


@pytest.mark.parametrize("head", ["none", "cnn", "lstm"])
def test_whisper_heads(head: str) -> None:
    model = tiny("whisper", head=head, pooling="attention").eval()
    with torch.no_grad():
        assert model(torch.from_numpy(waveforms())).shape == (2, 3)


def test_whisper_pools_only_the_clip_positions() -> None:
    """A half-second clip in a 1 s encoder: extra zero padding past the clip (which the
    encoder input has anyway) changes nothing; lengths mark the valid positions."""
    model = tiny("whisper", pooling="max").eval()
    clip = torch.from_numpy(waveforms())[:, :8000]
    with torch.no_grad():
        short = model(clip)
        padded = model(torch.nn.functional.pad(clip, (0, 8000)), lengths=torch.tensor([8000] * 2))
    assert torch.allclose(short, padded, atol=1e-5)


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_lengths_mark_valid_samples(family: str) -> None:
    """Full lengths are the same as none; shorter ones pool fewer frames."""
    model = tiny(family, pooling="mean").eval()
    clips = torch.from_numpy(waveforms())
    with torch.no_grad():
        unmarked = model(clips)
        full = model(clips, lengths=torch.tensor([SAMPLES, SAMPLES]))
        partial = model(clips, lengths=torch.tensor([SAMPLES, SAMPLES // 2]))
    assert torch.allclose(unmarked, full, atol=1e-5)
    assert torch.allclose(partial[0], full[0], atol=1e-5)
    assert not torch.allclose(partial[1], full[1], atol=1e-3)


def test_whisper_clip_longer_than_the_encoder_is_an_error() -> None:
    two_seconds = ModelContext(
        num_classes=3, class_names=CLASS_NAMES, audio=AudioConfig(clip_seconds=2.0)
    )
    with pytest.raises(ValueError, match="max_source_positions"):
        create_model("whisper", two_seconds, **MODELS.get("whisper").tiny)


# ------------------------------------------------------------------ features vs HF


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")
def test_kaldi_fbank_matches_ast_feature_extractor() -> None:
    """Within 1e-4 (float32 torch vs float64 numpy) on the normalised fbank, |values| ~ 1.
    (128 Kaldi bins over 257 FFT bins leave the lowest filters empty, in Kaldi too.)"""
    clips = waveforms(3)
    extractor = ASTFeatureExtractor(max_length=128)  # 128 mel bins, AudioSet statistics
    expected = extractor(list(clips), sampling_rate=16000, return_tensors="np")["input_values"]
    fbank = KaldiFbank(n_mels=128).eval()(torch.from_numpy(clips))
    assert fbank.shape == (3, 98, 128)  # 1 + (16000 - 400) // 160 frames
    ours = torch.nn.functional.pad(fbank, (0, 0, 0, 128 - 98))
    ours = ((ours - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("seconds", [30, 1])
def test_whisper_log_mel_matches_whisper_feature_extractor(n_mels: int, seconds: int) -> None:
    """Within 1e-5 over the clip's frames, for the full 30 s input and a cut 1 s one."""
    clips = waveforms(3)
    extractor = WhisperFeatureExtractor(feature_size=n_mels)
    expected = extractor(list(clips), sampling_rate=16000, return_tensors="np")["input_features"]
    ours = WhisperLogMel(n_mels, seconds * 16000)(torch.from_numpy(clips)).numpy()
    assert ours.shape == (3, n_mels, seconds * 100)
    np.testing.assert_allclose(ours, expected[..., : seconds * 100], atol=1e-5)


# ------------------------------------------------------------------ the shipped configs


@pytest.mark.parametrize("family", FAMILIES)
def test_shipped_config_builds_and_runs(family: str, repo_root: Path) -> None:
    config = load_config(repo_root / "configs" / "speech_commands" / f"{family}.yaml")
    assert config.model.name == family and config.model.params["pretrained"] is None
    model = create_model(family, context(), **config.model.params).eval()
    with torch.no_grad():
        assert model(torch.from_numpy(waveforms())).shape == (2, 3)


def test_emotion_config_freezes_a_saved_encoder_and_trains_its_head(
    tmp_path: Path, repo_root: Path
) -> None:
    """configs/models/wav2vec2.yaml (the emotion tasks' encoder, SUPERB-style) through the
    real `pretrained: <folder>` path: a 12-layer checkpoint (the base model's depth) loads,
    every encoder weight is frozen, the layer mix, head and classifier train, and a batch
    of 2 s clips gives finite logits."""
    from speechstack.config import load_config

    config = tiny_config("wav2vec2") | {"num_hidden_layers": 12}
    torch.manual_seed(1)
    Wav2Vec2ForPreTraining(
        Wav2Vec2Config(**config, codevector_dim=16, proj_codevector_dim=16)
    ).save_pretrained(tmp_path / "checkpoint")
    run = load_config(
        repo_root / "configs" / "ravdess" / "wav2vec2.yaml",
        [f"model.params.pretrained={tmp_path / 'checkpoint'}"],
    )
    model = create_model(run.model.name, context(), **run.model.params)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(name.startswith("backbone.") for name in trainable)
    assert "layer_sum.weights" in trainable
    two_seconds = torch.from_numpy(np.concatenate([waveforms(), waveforms(seed=1)], axis=1))
    with torch.no_grad():
        logits = model.eval()(two_seconds)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
