"""Speech recognition on the Common Voice layout: the reader (splits, columns, malformed rows
named with file and line), the CTC recogniser (step counts, blank), and a tiny run through
the CLI whose loss falls and whose run folder holds the model, vocabulary, transcripts and
report."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from speechstack.cli import main
from speechstack.config import TaskConfig, load_config
from speechstack.models import MODELS, ModelContext, create_model
from speechstack.synth import generate_asr
from speechstack.tasks import DatasetError, create_task
from speechstack.text import Vocabulary


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_asr(
        tmp_path_factory.mktemp("asr") / "demo",
        speakers=4,
        holdout_speakers=2,
        sentences_per_speaker=3,
        seed=0,
        progress=False,
    )


def task(data: Path, **params: object):
    return create_task(TaskConfig(name="common_voice", data_dir=data, params=params))


def test_reader_keeps_the_splits_and_their_speakers_apart(corpus: Path) -> None:
    reader = task(corpus)
    train, dev, test = reader.train_manifest(), reader.dev_manifest(), reader.test_manifest()
    assert reader.labels == []
    for split, name in ((train, "train"), (dev, "dev"), (test, "test")):
        tsv = pl.read_csv(corpus / f"{name}.tsv", separator="\t", quote_char=None)
        assert sorted(split["fname"]) == sorted(tsv["path"])
        assert dict(zip(split["fname"], split["sentence"], strict=True)) == dict(
            zip(tsv["path"], tsv["sentence"], strict=True)
        )
        assert {"gender", "locale", "group", "path"} <= set(split.columns)
        assert all(Path(path).is_file() for path in split["path"])
    assert not set(train["group"]) & set(test["group"])
    french = task(corpus, locale="fr").train_manifest()
    assert set(french["locale"]) == {"fr"} and french.height < train.height


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda text: text.replace("sentence", "phrase", 1), r"missing columns \['sentence'\]"),
        (lambda text: text.replace(".wav", ".gone.wav", 1),
         r"train\.tsv, line 2: clip .* not found"),
        (lambda text: "\n".join([*text.splitlines()[:2], "\t".join(["x", "a.wav", ""] + [""] * 7)]),
         r"train\.tsv, line 3: empty client_id, path or sentence"),
    ],
)  # fmt: skip
def test_reader_names_the_file_and_line_of_a_bad_row(
    corpus: Path, tmp_path: Path, change, message: str
) -> None:
    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy)
    tsv = copy / "train.tsv"
    tsv.write_text(change(tsv.read_text()))
    with pytest.raises(DatasetError, match=message):
        task(copy).train_manifest()
    (copy / "dev.tsv").unlink()
    with pytest.raises(DatasetError, match=r"dev\.tsv: missing split file"):
        task(copy).dev_manifest()


def test_ctc_recogniser_gives_a_step_per_two_frames() -> None:
    config = load_config(None, [])
    context = ModelContext(num_classes=7, audio=config.audio, features=config.features)
    model = create_model("ctc", context, **MODELS.get("ctc").tiny).eval()
    waveform = torch.randn(2, 16000) * 0.1
    logits = model(waveform)
    assert logits.shape[0] == 2 and logits.shape[2] == 7
    steps = model.output_lengths(torch.tensor([16000, 8000]))
    assert steps.tolist() == [logits.shape[1], 26]  # 101 frames -> 51 steps, 51 -> 26
    assert MODELS.get("ctc").trainer == "transcriber"


def test_a_tiny_recogniser_trains_through_the_cli(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    config = repo_root / "configs" / "asr" / "ctc.yaml"
    tiny = "model.params={channels: 32, hidden_size: 32, layers: 1, dropout: 0.0}"
    # the final transcripts by beam search with a word model of the training transcripts,
    # its weight and word bonus chosen on dev among four pairs
    beam = (
        "predict.beam={width: 4, language_model: train, order: 2, lm_weights: [0.0, 0.5], "
        "word_bonuses: [0.0, 1.0]}"
    )
    settings = ["train.epochs=4", "train.batch_size=4", "train.lr=3e-3", tiny, beam]
    args = ["train", "--config", str(config), "--data", str(corpus)]
    assert main([*args, *(a for s in settings for a in ("--set", s))]) == 0
    out = capsys.readouterr().out
    assert "test (unseen speakers) WER" in out
    run = Path("runs/asr/ctc")
    history = pl.read_csv(run / "history.csv")
    assert history["train_loss"][-1] < history["train_loss"][0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_cer"] >= 0 and metrics["best_epoch"] in history["epoch"].to_list()
    assert metrics["decoding"]["width"] == 4 and (run / "lm.json").is_file()
    tuning = metrics["beam_tuning"]
    assert [(row["lm_weight"], row["word_bonus"]) for row in tuning] == [
        (0.0, 0.0), (0.0, 1.0), (0.5, 0.0), (0.5, 1.0)
    ]  # fmt: skip
    chosen = min(tuning, key=lambda row: (row["dev_wer"], row["dev_cer"]))
    saved_beam = load_config(run / "config.yaml").predict.beam
    assert (saved_beam.lm_weight, saved_beam.word_bonus) == (
        chosen["lm_weight"],
        chosen["word_bonus"],
    )
    assert metrics["dev_wer"] == pytest.approx(chosen["dev_wer"])  # dev decoded with the choice
    best = history.filter(pl.col("epoch") == metrics["best_epoch"])
    assert metrics["greedy"]["dev_cer"] == pytest.approx(best["dev_cer"][0])  # same decoding
    assert set(metrics["greedy"]) == {"dev_wer", "dev_cer", "test_wer", "test_cer"}
    vocabulary = Vocabulary.load(run / "vocab.json")
    train_text = "".join(task(corpus).train_manifest()["sentence"]).lower()
    assert {"é"} & set(train_text) <= set(vocabulary.tokens)
    saved = torch.load(run / "model.pt", weights_only=True)
    assert saved["tokens"] == list(vocabulary.tokens)
    test = pl.read_csv(run / "test.csv")
    assert {"reference", "hypothesis", "gender", "locale"} <= set(test.columns)
    assert test.height == task(corpus).test_manifest().height
    report = (run / "report.md").read_text()
    assert "By gender" in report and f"{metrics['test_wer']:.4f}" in report

    # predict transcribes any folder with the finished run, as the run transcribed its test
    folder = Path("incoming")
    folder.mkdir()
    answers = pl.read_csv(corpus / "test.tsv", separator="\t", quote_char=None)
    for name in answers["path"]:
        shutil.copy(corpus / "clips" / name, folder / name)
    answers.select("path", "sentence").write_csv("answers.csv")
    predict = ["predict", "--config", str(config), "--data", str(corpus), "--audio", "incoming"]
    assert main([*predict, "--answers", "answers.csv", "--out", "said.csv"]) == 0
    said = pl.read_csv("said.csv")
    assert said.columns == ["path", "sentence"] and said.height == answers.height
    expected = dict(zip(test["fname"], test["hypothesis"].fill_null(""), strict=True))
    assert dict(zip(said["path"], said["sentence"].fill_null(""), strict=True)) == expected
    assert (
        f"WER {metrics['test_wer']:.4f}, CER {metrics['test_cer']:.4f}" in capsys.readouterr().out
    )


def test_utterances_decoded_when_asked_match_the_kept_ones(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``audio.in_memory: false`` (a corpus larger than memory): only durations are read up
    front, each clip is decoded when its batch comes, and the batches and transcripts are
    those of the kept clips."""
    from speechstack import transcribe as module
    from speechstack.transcribe import Utterances, transcribe

    manifest = task(corpus).train_manifest()
    vocabulary = Vocabulary.build(manifest["sentence"], module.TextConfig())
    decoded: list[str] = []
    original = module.read_audio
    monkeypatch.setattr(
        module, "read_audio", lambda path, rate: decoded.append(path) or original(path, rate)
    )
    kept = Utterances(manifest, vocabulary, 16000, False, in_memory=True)
    assert len(decoded) == manifest.height
    decoded.clear()
    streamed = Utterances(manifest, vocabulary, 16000, False, in_memory=False)
    assert decoded == [] and len(streamed) == len(kept) and streamed.tokens == kept.tokens
    assert list(streamed.batches(4, None)) == list(kept.batches(4, None))  # same length order
    for a, b in zip(
        streamed.waveforms(range(len(kept))), kept.waveforms(range(len(kept))), strict=True
    ):
        assert np.array_equal(a, b)
    assert len(decoded) == manifest.height  # decoded when asked, not kept
    config = load_config(None, [])
    context = ModelContext(len(vocabulary), vocabulary.tokens, config.audio, config.features)
    torch.manual_seed(0)
    model = create_model("ctc", context, channels=16, hidden_size=16, layers=1, dropout=0.0)
    assert transcribe(model, streamed, vocabulary, 4) == transcribe(model, kept, vocabulary, 4)


def test_a_second_copy_of_a_transcription_run_is_refused(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    from speechstack.lock import RunLock

    monkeypatch.chdir(tmp_path)
    config = repo_root / "configs" / "asr" / "ctc.yaml"
    with RunLock(Path("runs/asr/ctc"), "train", "experiment 'ctc'"):
        assert main(["train", "--config", str(config), "--data", str(corpus)]) == 2
    error = capsys.readouterr().err
    assert "experiment 'ctc'" in error and str(os.getpid()) in error
    assert not Path("runs/asr/ctc/model.pt").exists()


def test_an_interrupted_transcription_run_resumes_after_its_last_epoch(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    import speechstack.transcribe as transcribe

    monkeypatch.chdir(tmp_path)
    config = repo_root / "configs" / "asr" / "ctc.yaml"
    tiny = "model.params={channels: 16, hidden_size: 16, layers: 1, dropout: 0.0}"
    common = ["--config", str(config), "--data", str(corpus), "--set", tiny,
              "--set", "train.epochs=3", "--set", "train.batch_size=4"]  # fmt: skip
    assert main(["train", *common, "--set", "experiment=whole"]) == 0
    whole = pl.read_csv("runs/asr/whole/history.csv")

    scored = transcribe.error_rates
    calls = {"n": 0}

    def stop_at_the_second_epoch(*args: object, **kwargs: object):
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 2's dev scoring: epoch 1 is checkpointed, 2 is not
            raise KeyboardInterrupt
        return scored(*args, **kwargs)

    monkeypatch.setattr(transcribe, "error_rates", stop_at_the_second_epoch)
    assert main(["train", *common, "--set", "experiment=cut"]) == 130
    assert Path("runs/asr/cut/checkpoint.pt").is_file()
    assert not Path("runs/asr/cut/model.pt").exists()
    monkeypatch.setattr(transcribe, "error_rates", scored)
    capsys.readouterr()
    assert main(["train", *common, "--set", "experiment=cut"]) == 0
    assert "after epoch 1" in capsys.readouterr().out
    resumed = pl.read_csv("runs/asr/cut/history.csv")
    assert resumed["epoch"].to_list() == [1, 2, 3]
    assert resumed["dev_cer"].to_list() == whole["dev_cer"].to_list()
    assert resumed["train_loss"].to_list() == pytest.approx(whole["train_loss"].to_list(), rel=1e-5)
    assert not Path("runs/asr/cut/checkpoint.pt").exists()


def test_ctc_models_decode_best_paths_and_their_loss_ignores_padding_steps() -> None:
    config = load_config(None, [])
    context = ModelContext(num_classes=7, audio=config.audio, features=config.features)
    model = create_model("ctc", context, **MODELS.get("ctc").tiny).eval()
    waveform, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 8000])
    best = model(waveform, lengths).argmax(dim=-1)
    decoded = model.decode(waveform, lengths)
    steps = model.output_lengths(lengths).tolist()
    for row, ids in enumerate(decoded):
        path = best[row, : steps[row]].tolist()
        expected = [t for i, t in enumerate(path) if t != 0 and (i == 0 or path[i - 1] != t)]
        assert ids == expected
    model.train()
    loss = model.loss(waveform, lengths, [[3, 4, 5], [6]])
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_ctc_search_gets_each_clips_log_probabilities_without_padding_steps() -> None:
    config = load_config(None, [])
    context = ModelContext(num_classes=7, audio=config.audio, features=config.features)
    model = create_model("ctc", context, **MODELS.get("ctc").tiny).eval()
    waveform, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 8000])
    seen = []

    def search(log_probs):
        seen.append(log_probs)
        return [len(seen) + 2]

    assert [search(clip) for clip in model.log_probs(waveform, lengths)] == [[3], [4]]
    steps = model.output_lengths(lengths).tolist()
    assert [len(x) for x in seen] == steps and all(x.shape[1] == 7 for x in seen)
    with torch.no_grad():
        logits = model(waveform, lengths)
    expected = torch.log_softmax(logits[1, : steps[1]], dim=-1).numpy()
    assert seen[1] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["model.name=whisper_seq2seq", "predict.beam.width=4"], "own model.params.num_beams"),
        (["predict.beam={width: 4, language_model: missing.arpa}"], "missing.arpa not found"),
        (["predict.beam.language_model=train"], "needs predict.beam.width > 1"),
        (["predict.beam={width: 4, lm_weights: [0.5, 1.0]}"], "set predict.beam.language_model"),
    ],
)
def test_beam_settings_that_cannot_work_are_refused_before_training(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path,
    capsys: pytest.CaptureFixture, settings: list[str], message: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    config = repo_root / "configs" / "asr" / "ctc.yaml"
    if settings[0] == "model.name=whisper_seq2seq":
        config = repo_root / "configs" / "asr" / "whisper_seq2seq.yaml"
        settings = settings[1:]
    args = ["train", "--config", str(config), "--data", str(corpus)]
    assert main([*args, *(a for s in settings for a in ("--set", s))]) != 0
    assert message in capsys.readouterr().err
    assert not list(Path("runs").rglob("model.pt"))


def wav2vec2_ctc(num_classes: int, **params: object):
    config = load_config(None, [])
    context = ModelContext(num_classes=num_classes, audio=config.audio, features=config.features)
    return create_model("wav2vec2_ctc", context, **{**MODELS.get("wav2vec2_ctc").tiny, **params})


def test_wav2vec2_ctc_trains_with_the_ctc_loss_and_decodes_its_best_path() -> None:
    from speechstack.text import ctc_collapse

    torch.manual_seed(0)
    model = wav2vec2_ctc(9)
    assert MODELS.get("wav2vec2_ctc").trainer == "transcriber"
    waveform = torch.randn(2, 12000) * 0.2
    lengths = torch.tensor([12000, 9000])
    targets = [[3, 4, 5, 4], [6, 7]]
    steps = model.output_lengths(lengths)
    assert model(waveform, lengths).shape[:2] == (2, int(steps.max()))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        model.train()
        loss = model.loss(waveform, lengths, targets)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < losses[0] / 4
    model.eval()
    best = model(waveform, lengths).argmax(dim=-1)
    expected = [ctc_collapse(best[row, : int(steps[row])].tolist()) for row in range(2)]
    assert model.decode(waveform, lengths) == expected


def test_wav2vec2_ctc_loads_a_checkpoint_folder_with_another_vocabulary(tmp_path: Path) -> None:
    from speechstack.models.pretrained import PretrainedLoadError
    from speechstack.models.wav2vec2 import Wav2Vec2CTCParams

    wav2vec2_ctc(12).backbone.save_pretrained(tmp_path / "checkpoint")
    folder = str(tmp_path / "checkpoint")
    loaded = wav2vec2_ctc(9, pretrained=folder, config=None, freeze_feature_encoder=True)
    assert loaded.backbone.lm_head.out_features == 9 and loaded.backbone.config.pad_token_id == 0
    trainable = [p.requires_grad for p in loaded.backbone.wav2vec2.feature_extractor.parameters()]
    assert trainable and not any(trainable)  # the feature encoder is frozen (the default)
    assert Wav2Vec2CTCParams(pretrained=folder).freeze_feature_encoder
    with pytest.raises(PretrainedLoadError, match="hf download"):
        wav2vec2_ctc(9, pretrained=str(tmp_path / "missing"), config=None)


def test_a_corpus_without_a_test_split_trains_and_reports_dev(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    """A transcript manifest without a split column: speakers held out as dev, no test;
    the report is the dev split's."""
    monkeypatch.chdir(tmp_path)
    rows = pl.concat(
        [
            pl.read_csv(corpus / f"{s}.tsv", separator="\t", quote_char=None, infer_schema_length=0)
            for s in ("train", "dev")
        ]
    )
    rows.select(
        path=pl.lit("clips/") + pl.col("path"),
        sentence="sentence",
        speaker="client_id",
        gender="gender",
    ).write_csv(corpus / "mine.csv")
    config = repo_root / "configs" / "transcripts" / "ctc.yaml"
    settings = [
        "task.params.file=mine.csv",
        "task.params.dev_fraction=0.25",
        "train.epochs=1",
        "train.batch_size=8",
        "experiment=mine",
        "model.params={channels: 16, hidden_size: 16, layers: 1, dropout: 0.0}",
    ]
    args = ["train", "--config", str(config), "--data", str(corpus)]
    try:
        assert main([*args, *(a for s in settings for a in ("--set", s))]) == 0
    finally:
        (corpus / "mine.csv").unlink()
    assert "test: no sentences to score" in capsys.readouterr().out
    metrics = json.loads(Path("runs/transcripts/mine/metrics.json").read_text())
    assert metrics["report"] == "dev" and metrics["test_wer"] is None
    assert not Path("runs/transcripts/mine/test.csv").exists()
    assert "mine: dev transcripts" in Path("runs/transcripts/mine/report.md").read_text()


def test_a_recogniser_study_minimises_the_dev_wer(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    import optuna
    import yaml

    from speechstack import tune

    monkeypatch.chdir(tmp_path)
    shutil.copytree(repo_root / "configs", "configs")
    settings = ["train.epochs=2", "train.batch_size=8", "model.params.channels=16",
                "model.params.hidden_size=16", "model.params.layers=1"]  # fmt: skip
    common = ["--config", "configs/asr/ctc.yaml", "--data", str(corpus),
              *(a for s in settings for a in ("--set", s))]  # fmt: skip
    assert main(["tune", *common, "--trials", "2"]) == 0
    assert "best: trial" in capsys.readouterr().out
    config = load_config("configs/asr/ctc.yaml", [*settings, f"task.data_dir={corpus}"])
    assert tune.study_goal(config) == tune.Goal("dev WER", "minimize")
    study = optuna.load_study(study_name="asr-ctc", storage=tune.storage_url(config))
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert set(study.trials[0].params) == {
        "train.lr", "train.weight_decay", "augment.spec_augment.p", "augment.speed.p",
        "model.params.dropout",
    }  # fmt: skip
    for trial in study.trials:
        run = Path("studies/asr-ctc/runs/asr") / f"trial{trial.number}"
        metrics = json.loads((run / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["dev_wer"])
        history = pl.read_csv(run / "history.csv")
        assert trial.intermediate_values[1] == pytest.approx(history["dev_wer"].min())
    assert not Path("runs").exists()
    assert main(["tune", *common, "--export"]) == 0
    exported = Path("configs/asr/ctc-best.yaml")
    assert f"dev WER {study.best_value:.4f}" in exported.read_text()
    assert yaml.safe_load(exported.read_text())["train"]["lr"] == pytest.approx(
        min(study.trials, key=lambda t: t.value).params["train.lr"]
    )
