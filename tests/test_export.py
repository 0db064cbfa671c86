"""ONNX export (``speechstack export``) and prediction through ONNX Runtime: the log-mel's
export form equals the PyTorch one; an exported experiment (folds and test-time views in
one graph) gives the PyTorch probabilities within 1e-4 on real clips, through the CLI's
``predict --runtime onnx`` too; int8 files are written with the same metadata; unfinished
runs, features families and data that does not fit the model's metadata are refused with
the file named; ``spot`` slides a run over long recordings."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from conftest import TINY_SETTINGS
from speechstack.cli import main
from speechstack.config import load_config, save_config
from speechstack.exported import ExportError, OnnxModel
from speechstack.features import LogMel
from speechstack.inference import (
    PredictError,
    audio_manifest,
    load_fold_model,
    window_probabilities,
)
from speechstack.models import ModelContext, create_model
from speechstack.tasks import create_task

K = 3


def test_dft_log_mel_equals_log_mel() -> None:
    config = load_config(None, [])
    log_mel = LogMel(config.features, config.audio.sample_rate)
    rng = np.random.default_rng(0)
    tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) * np.linspace(0, 1, 16000)
    waveform = torch.from_numpy(
        np.stack([tone, rng.normal(0, 0.1, 16000), rng.normal(0, 1e-3, 16000)]).astype(np.float32)
    )
    with torch.no_grad():
        expected = log_mel(waveform)
        exported = log_mel.exportable()(waveform)
    assert exported.shape == expected.shape
    # float32 rounding of a DFT differs where a bin lies ~90 dB under the clip's peak
    within = expected > expected.amax(dim=(1, 2), keepdim=True) - 60
    assert (exported - expected).abs()[within].max() < 2e-3  # dB
    assert (exported - expected).abs().max() < 0.1


def _save_untrained_folds(tiny_speech_commands: Path, repo_root: Path) -> list[str]:
    """In the current folder: the folds file and every fold of the tiny CNN saved as
    training saves it (different random weights per fold; nothing is trained). Returns the
    CLI's common arguments."""
    config_file = repo_root / "configs" / "speech_commands" / "cnn.yaml"
    settings = [f"task.data_dir={tiny_speech_commands}", *TINY_SETTINGS]
    args = ["--config", str(config_file), *(a for s in settings for a in ("--set", s))]
    assert main(["folds", *args]) == 0
    config = load_config(config_file, settings)
    task = create_task(config.task)
    classes = task.classes()
    for fold in range(K):
        torch.manual_seed(fold)
        model = create_model(
            config.model.name, ModelContext.of(config, classes), **config.model.params
        )
        folder = config.run_dir / f"fold{fold}"
        folder.mkdir(parents=True)
        state = {
            "state_dict": model.state_dict(),
            "classes": classes,
            "labels": task.labels,
            "class_to_label": task.class_to_label().tolist(),
        }
        torch.save(state, folder / "model.pt")
        save_config(config, folder / "config.yaml")
    return args


@pytest.fixture
def trained_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_speech_commands: Path, repo_root: Path
) -> list[str]:
    """Work in ``tmp_path`` with every fold of the tiny CNN saved as training saves it
    (different random weights per fold; nothing is trained) and the folds file. Returns the
    CLI's common arguments."""
    monkeypatch.chdir(tmp_path)
    return _save_untrained_folds(tiny_speech_commands, repo_root)


@pytest.fixture(scope="module")
def exported_once(
    tmp_path_factory: pytest.TempPathFactory, tiny_speech_commands: Path, repo_root: Path
) -> tuple[Path, list[str], str]:
    """The run of ``trained_run`` exported once for the module (per xdist worker) through the
    CLI, ``speechstack export --quantize static``: ``model.onnx`` and ``model.int8.onnx``.
    One export of three folds with their views costs ~10-20 s; the tests that need an
    exported run each used to export it again. The float graph is the file a plain
    ``export`` writes (quantising only adds the int8 file beside it). Returns the folder,
    the CLI's common arguments and what the export printed. Read-only: use
    ``exported_run``."""
    folder = tmp_path_factory.mktemp("exported")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.chdir(folder)
        args = _save_untrained_folds(tiny_speech_commands, repo_root)
        assert main(["export", *args, "--quantize", "static"]) == 0
    return folder, args, printed.getvalue()


@pytest.fixture
def exported_run(
    exported_once: tuple[Path, list[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Work in ``tmp_path`` holding a copy of ``exported_once``'s folder (the test may change
    it). Returns the CLI's common arguments."""
    folder, args, _ = exported_once
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return args


def _test_windows(data: Path, count: int = 12) -> np.ndarray:
    from speechstack.audio import fit_length, read_audio

    clips = sorted((data / "test" / "audio").glob("*.wav"))[:count]
    rng = np.random.default_rng(0)
    return np.stack([fit_length(read_audio(c, 16000), 16000, rng) for c in clips])


def test_export_matches_pytorch_and_carries_metadata(
    exported_once: tuple[Path, list[str], str], exported_run: list[str], tiny_speech_commands: Path
) -> None:
    assert "exported 3 folds of 'cnn'" in exported_once[2]  # `export --quantize static`
    float_path = Path("runs/speech_commands/cnn/export/model.onnx")
    int8_path = float_path.with_name("model.int8.onnx")
    model = OnnxModel(float_path)
    labels = create_task(
        load_config(Path("runs/speech_commands/cnn/fold0/config.yaml")).task
    ).labels
    assert model.labels == labels
    assert (model.sample_rate, model.window_samples) == (16000, 16000)
    assert len(model.views) == 3  # speech_commands' predict.tta

    windows = _test_windows(tiny_speech_commands)
    loaded = [
        load_fold_model(Path(f"runs/speech_commands/cnn/fold{k}"), torch.device("cpu"))
        for k in range(K)
    ]
    views = loaded[0][1].predict.tta
    expected = window_probabilities(
        [(m, c) for m, _, c in loaded], views, 16000, torch.from_numpy(windows)
    ).numpy()
    got = model(windows)
    assert got.shape == (len(windows), len(labels))
    assert np.abs(got - expected).max() < 1e-4
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)

    quantized = OnnxModel(int8_path)
    assert quantized.metadata["quantized"] == "int8" and quantized.labels == labels
    assert int8_path.stat().st_size < float_path.stat().st_size
    int8 = quantized(windows)
    assert np.allclose(int8.sum(axis=1), 1.0, atol=1e-4)
    assert np.abs(int8 - expected).max() < 0.2  # close, not equal: int8 weights and activations


def test_predict_through_onnx_equals_pytorch(
    exported_run: list[str], tiny_speech_commands: Path
) -> None:
    audio = str(tiny_speech_commands / "test" / "audio")
    common = ["predict", *exported_run, "--audio", audio, "--source", "cnn"]
    assert main([*common, "--out", "torch.csv"]) == 0
    assert main([*common, "--out", "onnx.csv", "--runtime", "onnx"]) == 0
    torch_rows, onnx_rows = pl.read_csv("torch.csv"), pl.read_csv("onnx.csv")
    assert torch_rows["path"].to_list() == onnx_rows["path"].to_list()
    labels = [c for c in torch_rows.columns if c not in ("path", "label")]
    difference = np.abs(torch_rows.select(labels).to_numpy() - onnx_rows.select(labels).to_numpy())
    assert difference.max() < 1e-4
    assert (torch_rows["label"] == onnx_rows["label"]).all()


def test_export_refuses_an_unfinished_run(
    trained_run: list[str], capsys: pytest.CaptureFixture
) -> None:
    shutil.rmtree("runs/speech_commands/cnn/fold2")
    assert main(["export", *trained_run]) == 2
    error = capsys.readouterr().err
    assert "unfinished run" in error and "fold2" in error
    assert not Path("runs/speech_commands/cnn/export/model.onnx").exists()


def test_predict_refuses_a_model_made_for_other_data(
    exported_run: list[str], tiny_speech_commands: Path, capsys: pytest.CaptureFixture
) -> None:
    # what a plain `export` (no --quantize) leaves: the float graph only
    Path("runs/speech_commands/cnn/export/model.int8.onnx").unlink()
    model = OnnxModel(Path("runs/speech_commands/cnn/export/model.onnx"))
    with pytest.raises(ExportError, match="labels"):
        model.check([*model.labels[:-1], "maybe"], 16000, 16000)
    audio = str(tiny_speech_commands / "test" / "audio")
    args = ["predict", *exported_run, "--audio", audio, "--source", "cnn", "--runtime", "onnx"]
    assert main([*args, "--set", "audio.sample_rate=8000"]) == 2
    error = capsys.readouterr().err
    assert "model.onnx was exported for a sample rate of 16000 Hz (the data's: 8000 Hz)" in error
    assert main([*args, "--runtime", "onnx-int8"]) == 2
    assert "model.int8.onnx not found: export the experiment first" in capsys.readouterr().err


def test_a_damaged_export_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a graph")
    with pytest.raises(ExportError, match=r"model\.onnx cannot be loaded"):
        OnnxModel(path)


# The exporter traces a recurrent family's loop frame by frame (its trace time grows with
# the frames: ~30 s of a one-second window for the GRU): a quarter of a second gives the
# same graph of the same operators, over 26 frames instead of 101.
RECURRENT_WINDOW = {"gru": 4000, "lstm": 4000}


@pytest.mark.parametrize(
    ("family", "settings"),
    [
        (family, [])
        for family in ["gru", "lstm", "convs2s", "bcresnet", "wav2vec2", "ast", "whisper"]
    ]
    + [("cnn", ["features.pcen={}"])],
    ids=["gru", "lstm", "convs2s", "bcresnet", "wav2vec2", "ast", "whisper", "cnn-pcen"],
)
def test_other_families_export_with_parity(
    family: str, settings: list[str], tmp_path: Path
) -> None:
    """Two folds in one graph, the log-mel's STFT shared: each fold keeps its own
    compression (with PCEN, each fold's own learnt parameters, made to differ here)."""
    from speechstack.export import FoldEnsemble, write_onnx
    from speechstack.features import Pcen
    from speechstack.models import MODELS

    config = load_config(None, settings)
    context = ModelContext.of(config, [str(i) for i in range(5)])
    models = []
    for seed in range(2):
        torch.manual_seed(seed)
        model = create_model(family, context, **MODELS.get(family).tiny).eval()
        for module in model.modules():
            if isinstance(module, Pcen):
                with torch.no_grad():
                    module.log_params.add_(torch.randn_like(module.log_params) * 0.3)
        models.append(model)
    matrices = [np.eye(5, dtype=np.float32)] * 2
    ensemble = FoldEnsemble(models, matrices, [], 16000, share_log_mel=True)
    path = tmp_path / "model.onnx"
    samples = RECURRENT_WINDOW.get(family, 16000)
    metadata = {"labels": '["0","1","2","3","4"]', "sample_rate": "16000",
                "window_samples": str(samples), "views": "[]", "model": family}  # fmt: skip
    write_onnx(ensemble, samples, metadata, path)
    windows = np.random.default_rng(0).normal(0, 0.1, (4, samples)).astype(np.float32)
    expected = window_probabilities(
        list(zip(models, matrices, strict=True)), [], 16000, torch.from_numpy(windows)
    ).numpy()
    assert np.abs(OnnxModel(path)(windows) - expected).max() < 1e-4


def test_spot_writes_detections_and_scores_them(
    trained_run: list[str], tiny_speech_commands: Path, capsys: pytest.CaptureFixture
) -> None:
    long = tiny_speech_commands / "demo_long"
    answers = tiny_speech_commands / "demo_long.csv"
    first = sorted(long.glob("*.wav"))[0]
    args = ["spot", *trained_run, str(first), "--out", "spot/found.csv", "--plot"]
    assert main([*args, "--answers", str(answers), "--set", "spot.threshold=0.0"]) == 0
    out = capsys.readouterr().out
    found = pl.read_csv("spot/found.csv")
    assert found.columns == ["file", "start", "end", "label", "score"]
    assert found.height > 0 and set(found["file"]) == {first.name}
    assert not set(found["label"]) & {"silence", "unknown"}
    assert (found["end"] > found["start"]).all()
    assert Path(f"spot/found-{first.stem}.png").stat().st_size > 0
    assert "precision" in out and "recall" in out
    assert audio_manifest(long).height == len(list(long.glob("*.wav")))


def test_spot_with_a_stack_combines_its_members(
    trained_run: list[str], tiny_speech_commands: Path
) -> None:
    """``spot --source <stack>``: every member scores the windows and the stack's kept
    source combines them (here the mean of the trained run and a perturbed copy)."""
    import json

    from speechstack.inference import spot_files
    from speechstack.stack import STACKER_SPEC, member_columns

    config = load_config(Path(trained_run[1]), trained_run[3::2])
    labels = create_task(config.task).labels
    runs = config.task_runs_dir
    shutil.copytree(runs / config.experiment, runs / "other")
    for saved in sorted((runs / "other").glob("fold*/model.pt")):
        state = torch.load(saved, weights_only=False)
        generator = torch.Generator().manual_seed(1)
        for key, tensor in state["state_dict"].items():
            if tensor.is_floating_point() and "running_" not in key:  # weights, not statistics
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.5)
        torch.save(state, saved)
    members = [config.experiment, "other"]
    (runs / "stack").mkdir()
    (runs / "stack" / STACKER_SPEC).write_text(json.dumps({
        "experiments": members, "labels": labels, "selected": "mean",
        "features": [c for name in members for c in member_columns(name, labels)],
    }))  # fmt: skip
    from speechstack.audio import read_audio
    from speechstack.synth.common import write_wav

    long = sorted((tiny_speech_commands / "demo_long").glob("*.wav"))[0]
    recording = Path("recording.wav")  # its first 6 s: enough windows, a quarter of the time
    write_wav(recording, read_audio(long, 16000)[: 6 * 16000])
    found = {
        source: spot_files(config, source, recording, labels, progress=False)[recording.name]
        for source in [*members, "stack"]
    }
    own, other, stack = (found[source].scores for source in [*members, "stack"])
    assert np.abs(own - other).max() > 0.05  # the members differ ...
    assert np.allclose(stack, (own + other) / 2, atol=1e-5)  # ... and the stack is their mean
    with pytest.raises(PredictError, match="no such run"):
        spot_files(config, "missing", recording, labels, progress=False)


def test_spot_hears_each_recording_with_its_own_batch_norm_statistics(
    trained_run: list[str], tiny_speech_commands: Path
) -> None:
    """A fold trained with ``predict.adapt_norm`` scores a recording's windows with the
    batch-norm statistics of that recording's own windows (as ``predict`` a folder's);
    with fewer than ``predict.adapt_min_clips`` windows, with the training's."""
    from speechstack.audio import read_audio
    from speechstack.inference import load_fold_model, window_probabilities, window_scorer
    from speechstack.spot import window_batches
    from speechstack.tta import adapt_batch_norm

    config = load_config(Path(trained_run[1]), trained_run[3::2])
    labels = create_task(config.task).labels
    assert config.predict.adapt_norm and config.predict.adapt_min_clips == 100
    long = sorted((tiny_speech_commands / "demo_long").glob("*.wav"))[0]
    recording = read_audio(long, 16000)[: 12 * 16000]  # 111 windows 0.1 s apart
    loud = recording * 4 + np.random.default_rng(0).normal(0, 0.05, recording.shape)
    loud = loud.astype(np.float32)
    first = recording[:16000][None].astype(np.float32)  # the first window of each
    loaded = [load_fold_model(folder, torch.device("cpu")) for folder in sorted(
        config.run_dir.glob("fold*"))]  # fmt: skip
    views = config.predict.tta

    def by_hand(waveform: np.ndarray | None) -> np.ndarray:
        models = []
        for model, _, class_to_label in loaded:
            if waveform is not None:
                batches = window_batches(waveform, 16000, 1600, config.spot.batch_size)
                windows = (torch.from_numpy(chunk) for _, chunk in batches)
                model = adapt_batch_norm(model, windows, torch.device("cpu"))
            models.append((model, class_to_label))
        return window_probabilities(models, views, 16000, torch.from_numpy(first)).numpy()

    scorer = window_scorer(config, config.experiment, labels, "torch")
    own = scorer(recording)(first)
    np.testing.assert_allclose(own, by_hand(recording), atol=1e-5)
    assert np.abs(own - by_hand(None)).max() > 1e-3  # not the training's statistics ...
    assert np.abs(own - scorer(loud)(first)).max() > 1e-3  # ... nor another recording's
    sparse = config.model_copy(update={"spot": config.spot.model_copy(update={"hop_seconds": 0.5})})
    few = window_scorer(sparse, config.experiment, labels, "torch")(recording)  # 23 windows
    np.testing.assert_allclose(few(first), by_hand(None), atol=1e-6)


def test_submission_through_the_exported_model(
    exported_run: list[str], tiny_speech_commands: Path, capsys: pytest.CaptureFixture
) -> None:
    config = load_config(Path("runs/speech_commands/cnn/fold0/config.yaml"))
    labels = create_task(config.task).labels
    folds = pl.read_csv(config.folds_file)
    test = create_task(config.task).test_manifest()
    uniform = {label: 1.0 / len(labels) for label in labels}
    for fold in range(K):  # what training writes beside the model (made up: uniform)
        folder = Path(f"runs/speech_commands/cnn/fold{fold}")
        fnames = folds.filter(pl.col("fold") == fold)["fname"]
        pl.DataFrame({"fname": fnames, **uniform}).write_parquet(folder / "oof.parquet")
        pl.DataFrame({"fname": test["fname"], **uniform}).write_parquet(folder / "test.parquet")
    # the export (made before these tables: it reads only the models) is exported_run's
    args = ["submission", *exported_run, "--source", "cnn", "--runtime", "onnx"]
    assert main([*args, "--out", "sub.csv"]) == 0
    assert "test probabilities from the exported models (onnx)" in capsys.readouterr().out
    audio = str(tiny_speech_commands / "test" / "audio")
    predict = ["predict", *exported_run, "--audio", audio, "--source", "cnn", "--out", "p.csv"]
    assert main(predict) == 0
    expected = dict(pl.read_csv("p.csv").select("path", "label").rows())
    submitted = pl.read_csv("sub.csv")
    assert submitted.height == test.height
    assert dict(submitted.rows()) == expected  # not the uniform test.parquet's labels


def test_spot_walks_a_folder_and_names_a_missing_file(
    trained_run: list[str], tiny_speech_commands: Path, capsys: pytest.CaptureFixture
) -> None:
    first = sorted((tiny_speech_commands / "demo_long").glob("*.wav"))[0]
    (Path("calls") / "monday").mkdir(parents=True)
    shutil.copy(first, Path("calls") / "monday" / "call.wav")
    args = ["spot", *trained_run, "--set", "spot.threshold=0.0", "--out", "found.csv"]
    assert main([*args, "calls"]) == 0
    assert set(pl.read_csv("found.csv")["file"]) == {"monday/call.wav"}
    assert main([*args, "calls/tuesday.wav"]) == 2
    assert "calls/tuesday.wav: file not found" in capsys.readouterr().err
    Path("empty").mkdir()
    assert main([*args, "empty"]) == 2
    assert "empty: no audio files" in capsys.readouterr().err
