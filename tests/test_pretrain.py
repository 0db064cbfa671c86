"""wav2vec2 pre-training from scratch (``speechstack pretrain``): the contrastive loss
falls when the model can learn (one batch, slow), the run writes a folder that both
wav2vec2 families load, resumes after its last finished epoch with the uninterrupted run's
numbers, refuses a second copy and keeps a finished folder."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile
import torch

from speechstack.cli import main
from speechstack.config import PretrainConfig, load_config
from speechstack.models import ModelContext, create_model

RATE = 16000
MICRO = (  # a 45k-parameter wav2vec2 with its quantiser: the flow, not the learning
    "pretrain.architecture={conv_dim: [32, 32, 32, 32, 32, 32, 32], hidden_size: 32, "
    "num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, "
    "num_conv_pos_embeddings: 16, num_conv_pos_embedding_groups: 4, codevector_dim: 32, "
    "proj_codevector_dim: 32, num_codevectors_per_group: 32}"
)


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Unlabelled recordings: gliding tones in noise, 1-2 s, in nested folders, plus a file
    too short to use and one that is not audio."""
    folder = tmp_path_factory.mktemp("unlabelled")
    rng = np.random.default_rng(0)
    for index in range(6):
        seconds = 1.0 + index / 5
        time = np.arange(int(seconds * RATE)) / RATE
        pitch = 150 + 40 * index + 60 * time
        wave = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / RATE) + 0.02 * rng.normal(size=len(time))
        path = folder / f"speaker{index % 2}" / f"clip{index}.{'flac' if index % 3 else 'wav'}"
        path.parent.mkdir(exist_ok=True)
        soundfile.write(path, wave.astype(np.float32), RATE)
    soundfile.write(folder / "short.wav", np.zeros(RATE // 10, np.float32), RATE)
    (folder / "notes.wav").write_text("not audio")
    return folder


def arguments(audio: Path, out: Path, *settings: str) -> list[str]:
    config = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "wav2vec2.yaml"
    sets = [MICRO, f"pretrain.out={out}", "pretrain.crop_seconds=1.0", "pretrain.batch_size=3",
            "pretrain.num_negatives=10", "pretrain.mask_time_length=4", *settings]  # fmt: skip
    return ["pretrain", "--config", str(config), "--audio", str(audio),
            *(a for s in sets for a in ("--set", s))]  # fmt: skip


def test_a_pretraining_run_writes_a_folder_both_wav2vec2_families_load(
    audio: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "w2v"
    assert main(arguments(audio, out, "pretrain.epochs=2")) == 0
    printed = capsys.readouterr().out
    assert "6 files" in printed and "2 too short or unreadable" in printed
    history = pl.read_csv(out / "history.csv")
    assert history["epoch"].to_list() == [1, 2]
    assert history["contrastive"].min() > 0 and history["accuracy"].is_between(0, 1).all()
    assert history["perplexity"].is_between(1, 2 * 32).all()  # groups x entries in use
    assert (out / "pretrain.png").stat().st_size > 1000
    assert (out / "preprocessor_config.json").is_file()
    assert not (tmp_path / "w2v.checkpoint.pt").exists()  # gone once the folder is written

    from transformers import Wav2Vec2ForPreTraining

    loaded = Wav2Vec2ForPreTraining.from_pretrained(out)
    assert (loaded.config.mask_time_prob, loaded.config.mask_time_length) == (0.05, 10)
    trained = loaded.wav2vec2.state_dict()
    config = load_config(None, [])
    for family, extra in (("wav2vec2", {"num_classes": 3}), ("wav2vec2_ctc", {"num_classes": 9})):
        context = ModelContext(audio=config.audio, features=config.features, **extra)
        model = create_model(family, context, pretrained=str(out), config=None)
        encoder = model.backbone if family == "wav2vec2" else model.backbone.wav2vec2
        for name, weights in encoder.state_dict().items():
            torch.testing.assert_close(weights, trained[name], msg=f"{family}: {name}")
        model.eval()
        with torch.no_grad():
            assert torch.isfinite(model(torch.randn(2, RATE) * 0.1)).all()

    capsys.readouterr()
    assert main(arguments(audio, out, "pretrain.epochs=2")) == 0  # finished: kept as it is
    assert "already pre-trained" in capsys.readouterr().out


def test_an_interrupted_pretraining_run_resumes_after_its_last_epoch(
    audio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import speechstack.pretrain as pretrain

    assert main(arguments(audio, tmp_path / "whole", "pretrain.epochs=3")) == 0
    whole = pl.read_csv(tmp_path / "whole" / "history.csv")
    step, calls = pretrain._step, {"n": 0}

    def stop_in_the_second_epoch(*args: object, **kwargs: object):
        calls["n"] += 1
        if calls["n"] == 3:  # 6 files in batches of 3: epoch 2's first batch
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    monkeypatch.setattr(pretrain, "_step", stop_in_the_second_epoch)
    assert main(arguments(audio, tmp_path / "cut", "pretrain.epochs=3")) == 130
    assert (tmp_path / "cut.checkpoint.pt").is_file() and not (tmp_path / "cut").exists()
    monkeypatch.setattr(pretrain, "_step", step)
    capsys.readouterr()
    assert main(arguments(audio, tmp_path / "cut", "pretrain.epochs=3")) == 0
    assert "after epoch 1" in capsys.readouterr().out
    resumed = pl.read_csv(tmp_path / "cut" / "history.csv")
    for column in ("loss", "contrastive", "accuracy", "perplexity"):
        assert resumed[column].to_list() == pytest.approx(whole[column].to_list(), rel=1e-5)


def test_a_second_copy_of_a_pretraining_run_is_refused(
    audio: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from speechstack.lock import RunLock

    with RunLock(tmp_path, "pretrain-w2v", "pre-training"):
        assert main(arguments(audio, tmp_path / "w2v")) == 2
    assert str(os.getpid()) in capsys.readouterr().err
    assert not (tmp_path / "w2v").exists()


def test_bad_pretraining_settings_are_named(audio: Path, tmp_path: Path) -> None:
    from speechstack.pretrain import build_model, find_recordings

    with pytest.raises(ValueError, match=r"unknown Wav2Vec2Config key\(s\) \['hidden'\]"):
        build_model(PretrainConfig(architecture={"hidden": 3}))
    with pytest.raises(ValueError, match=r"no audio file of at least 5\.0 s"):
        find_recordings(audio, 5.0)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_recordings(tmp_path / "missing", 1.0)


def test_the_sizes_match_the_paper(tmp_path: Path) -> None:
    """small/medium/base: about 36M, 62M and 95M parameters with the quantiser (built on
    the meta device: no memory, no time)."""
    from speechstack.pretrain import build_model

    with torch.device("meta"):
        counts = {
            size: sum(p.numel() for p in build_model(PretrainConfig(size=size)).parameters())
            for size in ("tiny", "small", "medium", "base")
        }
    assert counts["tiny"] < 1e6
    assert [round(counts[s] / 1e6) for s in ("small", "medium", "base")] == [36, 63, 95]


@pytest.mark.slow
def test_the_contrastive_loss_falls_when_there_is_something_to_learn(audio: Path) -> None:
    """The tiny size on one batch of four crops: the masked frames' latents become
    predictable, and the loss falls well below chance (ln of 1 + distractors)."""
    from speechstack.pretrain import _crops, _step, build_model, find_recordings

    torch.manual_seed(0)
    settings = PretrainConfig(num_negatives=20, crop_seconds=1.0)
    recordings, _ = find_recordings(audio, 0.5)
    model = build_model(settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch, lengths = _crops(recordings, [0, 1, 2, 3], 1.0, np.random.default_rng(0))
    losses = []
    for step in range(80):
        numbers = _step(model.train(), batch, lengths, settings, np.random.default_rng(step))
        optimizer.zero_grad()
        numbers["loss"].backward()
        optimizer.step()
        losses.append(numbers["contrastive"].item())
    chance = math.log(1 + settings.num_negatives)
    assert losses[0] == pytest.approx(chance, abs=0.3)
    assert np.mean(losses[-10:]) < 0.6 * chance
