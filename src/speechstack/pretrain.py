"""wav2vec 2.0 pre-trained from scratch, self-supervised, on a folder of unlabelled audio
(``speechstack pretrain``, ``make pretrain``).

The objective of the paper (Baevski et al., 2020), through HF ``Wav2Vec2ForPreTraining``:
spans of the convolutional encoder's latent frames are masked (``mask_time_prob`` of the
frames start a span of ``mask_time_length``); for each masked frame the transformer's
output must pick the Gumbel-softmax-quantised latent of that frame out of
``num_negatives`` distractors quantised from other frames of the same clip (contrastive
loss), while a diversity loss keeps the codebook entries in use. Both are reported per
masked frame; with them, per epoch: the contrastive accuracy (how often the true latent
scores highest) and the codebook perplexity (how many code vectors are in use, of
groups x entries).

``SIZES`` holds the architectures: ``small``, ``medium`` and ``base`` match the paper's
family sizes (about 36M, 62M and 95M parameters with the quantiser; README), with layer
norm in every convolution and a pre-norm transformer, the variant that trains from scratch
most easily (as wav2vec2-large-lv60 and XLS-R do); ``tiny`` fits a CPU demo.
``pretrain.architecture`` overrides any Wav2Vec2Config key.

Each epoch takes a random crop (``crop_seconds``) of every file, decoded as it is needed, so
the corpus never sits in memory. After every epoch the loop's whole state (weights,
optimiser, schedule, history, random generators) goes to ``<out>.checkpoint.pt``
atomically, so an interrupted or killed run resumes after its last finished epoch; one
process at a time per output folder (a second is refused, naming the first). The
finished folder (written as a whole, atomically) holds ``config.json`` and the weights
(``save_pretrained``), ``preprocessor_config.json`` (what HF's feature extractor needs),
``history.csv`` and ``pretrain.png`` (the curves); a folder that is already there is kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import soundfile
import torch
from tqdm.auto import tqdm

from speechstack import interrupt
from speechstack.artifacts import atomic_directory, atomic_write_json
from speechstack.audio import read_audio
from speechstack.checkpoint import FoldCheckpoint, capture_random_state, restore_random_state
from speechstack.config import Config, PretrainConfig
from speechstack.data import pad_waveforms
from speechstack.lock import RunLock
from speechstack.models.pretrained import normalize_per_clip, valid_mask
from speechstack.train import warmup_cosine

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus")
SAMPLE_RATE = 16000  # Hz, as every wav2vec2 checkpoint
CONVOLUTION = {  # the paper's waveform encoder: 320x down-sampling, 20 ms frames
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
}
FROM_SCRATCH = {"feat_extract_norm": "layer", "do_stable_layer_norm": True}
SIZES: dict[str, dict[str, Any]] = {  # Wav2Vec2Config keys of each size
    "tiny": {
        **CONVOLUTION, **FROM_SCRATCH, "conv_dim": [64] * 7, "hidden_size": 128,
        "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 256,
        "num_conv_pos_embeddings": 32, "num_conv_pos_embedding_groups": 8,
        "num_codevector_groups": 2, "num_codevectors_per_group": 64, "codevector_dim": 64,
        "proj_codevector_dim": 64,
    },
    "small": {
        **CONVOLUTION, **FROM_SCRATCH, "hidden_size": 512, "num_hidden_layers": 9,
        "num_attention_heads": 8, "intermediate_size": 2048,
    },
    "medium": {
        **CONVOLUTION, **FROM_SCRATCH, "hidden_size": 640, "num_hidden_layers": 11,
        "num_attention_heads": 10, "intermediate_size": 2560,
    },
    "base": {**CONVOLUTION, **FROM_SCRATCH},  # HF's defaults are wav2vec2-base's sizes
}  # fmt: skip
FINE_TUNE_MASKING = (0.05, 10)  # mask_time_prob, mask_time_length saved for fine-tuning
HISTORY = "history.csv"
PLOT = "pretrain.png"


def pretrain_folder(config: Config) -> Path:
    """Where the pre-trained model goes (``pretrain.out``, else by size under the runs)."""
    return config.pretrain.out or config.runs_dir / "pretrain" / f"wav2vec2-{config.pretrain.size}"


def audio_dir(config: Config) -> Path:
    return config.pretrain.audio_dir or config.task.data_dir


@dataclass(frozen=True)
class Recording:
    path: Path
    seconds: float


def find_recordings(folder: Path, min_seconds: float) -> tuple[list[Recording], int]:
    """The audio files below ``folder`` (sorted) with their lengths, and how many were left
    out as shorter than ``min_seconds`` or unreadable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of audio files (pretrain.audio_dir)")
    found: list[Recording] = []
    skipped = 0
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    for path in paths:
        try:
            info = soundfile.info(str(path))
        except (RuntimeError, soundfile.LibsndfileError):
            skipped += 1
            continue
        seconds = info.frames / info.samplerate if info.samplerate else 0.0
        if seconds < min_seconds:
            skipped += 1
            continue
        found.append(Recording(path, seconds))
    if not found:
        raise ValueError(
            f"{folder}: no audio file of at least {min_seconds} s ({', '.join(AUDIO_SUFFIXES)}; "
            f"{skipped} too short or unreadable)"
        )
    return found, skipped


def build_model(settings: PretrainConfig) -> Any:
    """A fresh ``Wav2Vec2ForPreTraining`` of the configured size."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    known = Wav2Vec2Config()
    unknown = [key for key in settings.architecture if not hasattr(known, key)]
    if unknown:
        raise ValueError(f"pretrain.architecture: unknown Wav2Vec2Config key(s) {unknown}")
    keys = {
        **SIZES[settings.size],
        "mask_time_prob": settings.mask_time_prob,
        "mask_time_length": settings.mask_time_length,
        "num_negatives": settings.num_negatives,
        "diversity_loss_weight": settings.diversity_weight,
        **settings.architecture,
    }
    return Wav2Vec2ForPreTraining(Wav2Vec2Config(**keys))


def _crops(
    recordings: list[Recording], indices: list[int], seconds: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of random crops (at most ``seconds``) and their lengths in samples."""
    waves = []
    for index in indices:
        recording = recordings[index]
        length = min(seconds, recording.seconds)
        start = float(rng.uniform(0.0, recording.seconds - length))
        waves.append(read_audio(recording.path, SAMPLE_RATE, start_seconds=start,
                                duration_seconds=length))  # fmt: skip
    return pad_waveforms(waves)


def _step(model: Any, batch: torch.Tensor, lengths: torch.Tensor, settings: PretrainConfig,
          rng: np.random.Generator) -> dict[str, torch.Tensor]:  # fmt: skip
    """The losses of one batch (per masked frame), the contrastive accuracy and the
    codebook perplexity."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import (
        _compute_mask_indices,
        _sample_negative_indices,
    )

    inputs = normalize_per_clip(batch, lengths)
    frames = model._get_feat_extract_output_lengths(lengths)
    steps = int(model._get_feat_extract_output_lengths(torch.tensor(batch.shape[1])))
    valid = valid_mask(frames, steps)
    assert valid is not None
    shape = (len(batch), steps)
    np_state = np.random.get_state()  # HF draws the masks from NumPy's global generator:
    np.random.seed(int(rng.integers(2**31)))  # seeded from the loop's own
    masked = _compute_mask_indices(shape, settings.mask_time_prob, settings.mask_time_length,
                                   attention_mask=valid.long(), min_masks=2)  # fmt: skip
    negatives = _sample_negative_indices(shape, settings.num_negatives, valid.numpy())
    np.random.set_state(np_state)
    mask = torch.from_numpy(masked) & valid
    sample_mask = valid_mask(lengths, batch.shape[1])
    assert sample_mask is not None
    output = model(
        inputs,
        attention_mask=sample_mask.long(),
        mask_time_indices=mask,
        sampled_negative_indices=torch.from_numpy(negatives),
    )
    count = mask.sum().clamp_min(1)
    with torch.no_grad():
        accuracy = _contrastive_accuracy(model, output, negatives, mask)
    return {
        "loss": output.loss / count,
        "contrastive": output.contrastive_loss.detach() / count,
        "diversity": output.diversity_loss.detach() / count,
        "accuracy": accuracy,
        "perplexity": output.codevector_perplexity.detach(),
    }


def _contrastive_accuracy(
    model: Any, output: Any, negatives: np.ndarray, mask: torch.Tensor
) -> torch.Tensor:
    """Share of masked frames whose true quantised latent scores above every distractor
    (the logits of ``Wav2Vec2ForPreTraining.forward``, recomputed without gradients)."""
    quantized = output.projected_quantized_states
    batch, steps, width = quantized.shape
    picked = quantized.reshape(-1, width)[torch.from_numpy(negatives).long().reshape(-1)]
    distractors = picked.reshape(batch, steps, -1, width).permute(2, 0, 1, 3)
    logits = model.compute_contrastive_logits(
        quantized[None], distractors, output.projected_states,
        model.config.contrastive_logits_temperature,
    )  # fmt: skip
    same = (quantized == distractors).all(-1)
    logits[1:][same] = float("-inf")
    right = logits.argmax(dim=0) == 0  # (batch, steps)
    return right[mask].float().mean() if mask.any() else torch.tensor(0.0)


def pretrain(config: Config, progress: bool = True) -> dict[str, Any]:
    """Pre-train (or resume) and write the model folder (module notes); returns the last
    epoch's numbers. A finished folder is kept and reported, not trained again."""
    out = pretrain_folder(config)
    with RunLock(out.parent, f"pretrain-{out.name}", f"pre-training {out}"):
        if (out / "config.json").is_file():
            history = pl.read_csv(out / HISTORY)
            print(f"{out} is already pre-trained; delete it to train again")
            return {**history.row(-1, named=True), "out": str(out), "skipped": True}
        return _pretrain(config, out, progress)


def _pretrain(config: Config, out: Path, progress: bool) -> dict[str, Any]:
    settings = config.pretrain
    started = time.perf_counter()
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    torch.manual_seed(settings.seed)
    recordings, skipped = find_recordings(audio_dir(config), settings.min_seconds)
    if progress:
        hours = sum(r.seconds for r in recordings) / 3600
        print(f"pre-training on {len(recordings)} files ({hours:.2f} h) from "
              f"{audio_dir(config)}; {skipped} too short or unreadable")  # fmt: skip
    model = build_model(settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr,
                                  weight_decay=settings.weight_decay)  # fmt: skip
    per_epoch = math.ceil(len(recordings) / settings.batch_size)
    scheduler = warmup_cosine(optimizer, settings.epochs * per_epoch, settings.warmup_fraction)
    rng = np.random.default_rng(settings.seed)
    identity = f"{settings.model_dump_json()} {[str(r.path) for r in recordings]}"
    checkpoint = FoldCheckpoint(out.with_name(f"{out.name}.checkpoint.pt"), identity,
                                config.train.checkpoint)  # fmt: skip
    history: list[dict[str, Any]] = []
    first, step = 1, 0
    state = checkpoint.load()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, step = state["history"], state["step"]
        restore_random_state(state["random"], {"loop": rng}, {})
        first = state["epoch"] + 1
        if progress:
            print(f"resuming {out} after epoch {state['epoch']}")
    start_temperature, end_temperature = settings.gumbel_temperature
    for epoch in range(first, settings.epochs + 1):
        model.train()
        sums: dict[str, float] = {}
        order = rng.permutation(len(recordings)).tolist()
        size = settings.batch_size
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        for indices in tqdm(batches, desc=f"epoch {epoch}", disable=not progress, leave=False):
            interrupt.check()
            temperature = max(start_temperature * settings.gumbel_decay**step, end_temperature)
            model.set_gumbel_temperature(temperature)
            batch, lengths = _crops(recordings, indices, settings.crop_seconds, rng)
            numbers = _step(model, batch, lengths, settings, rng)
            optimizer.zero_grad(set_to_none=True)
            numbers["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            for name, value in numbers.items():
                sums[name] = sums.get(name, 0.0) + value.item()
        row = {"epoch": epoch, **{k: v / len(batches) for k, v in sums.items()},
               "temperature": temperature, "lr": scheduler.get_last_lr()[0]}  # fmt: skip
        history.append(row)
        if progress:
            print(f"epoch {epoch:2d}/{settings.epochs}: loss {row['loss']:.3f} (contrastive "
                  f"{row['contrastive']:.3f}, diversity {row['diversity']:.3f}), accuracy "
                  f"{row['accuracy']:.3f}, perplexity {row['perplexity']:.1f}")  # fmt: skip
        checkpoint.save({
            "epoch": epoch, "step": step, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "history": history, "random": capture_random_state({"loop": rng}, {}),
        })  # fmt: skip
    _write_folder(model, out, history)
    checkpoint.remove()
    result = {**history[-1], "out": str(out), "files": len(recordings),
              "parameters": sum(p.numel() for p in model.parameters()),
              "seconds": time.perf_counter() - started}  # fmt: skip
    atomic_write_json(out / "metrics.json", result)
    return result


def _write_folder(model: Any, out: Path, history: list[dict[str, Any]]) -> None:
    """The model folder, as a whole: weights and config, the feature extractor's settings,
    the history and its plot."""
    from transformers import Wav2Vec2FeatureExtractor

    # the saved config is what a fine-tune starts from: its masking, as in wav2vec2-base's
    # config.json, not pre-training's (which hides most of every clip)
    model.config.mask_time_prob, model.config.mask_time_length = FINE_TUNE_MASKING
    with atomic_directory(out) as temp:
        model.save_pretrained(temp)
        Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
            return_attention_mask=model.config.feat_extract_norm == "layer",
        ).save_pretrained(temp)  # fmt: skip
        frame = pl.DataFrame(history)
        frame.write_csv(temp / HISTORY)
        plot_history(frame, temp / PLOT)


def plot_history(history: pl.DataFrame, path: Path) -> None:
    """Loss (contrastive, diversity) and contrastive accuracy per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (losses, accuracy) = plt.subplots(1, 2, figsize=(9, 3.4))
    for column in ("loss", "contrastive", "diversity"):
        losses.plot(history["epoch"], history[column], marker=".", label=column)
    losses.set(xlabel="epoch", ylabel="per masked frame", title="pre-training loss")
    losses.legend()
    accuracy.plot(history["epoch"], history["accuracy"], marker=".", color="tab:green")
    accuracy.set(xlabel="epoch", ylabel="share", title="contrastive accuracy", ylim=(0, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
