"""A speech-recognition run (``make train`` with a ``transcriber`` family: ``ctc``,
``wav2vec2_ctc``, ``whisper_seq2seq``, on a transcript task: ``common_voice``,
``transcript_manifest``, ``bengali_ai``): the corpus's splits, a character vocabulary built
from the training transcripts, training with the family's own loss (CTC, or a decoder's
cross-entropy) and the best epoch chosen by the dev CER, and the held-out test transcribed
and, where it has sentences, scored. Targets and outputs are the vocabulary's characters,
or the model's own tokens where it has a tokenizer (``whisper_seq2seq`` with ``tokenizer:
whisper``: Whisper's BPE, ``tokenizer_of``); either way transcripts are normalised with the
vocabulary's settings.

Writes ``runs/<dataset>/<experiment>/``: ``model.pt`` (the best epoch's weights),
``vocab.json`` (``text.Vocabulary``, with its normalisation settings), ``config.yaml``,
``history.csv`` (loss, dev WER and CER per epoch), ``dev.csv``/``test.csv`` (reference,
hypothesis and the group columns of every utterance; a test split without sentences is
only transcribed), ``report.md``/``report.json`` (test WER/CER, or dev's when the test has
no sentences, overall, per gender, locale and speaker, the worst utterances) and
``metrics.json``; every file atomically. After every epoch the loop's whole state (weights,
optimiser, schedule, history, best epoch, random generators) is saved to
``checkpoint.pt`` (``checkpoint.FoldCheckpoint``), so an interrupted or killed run resumes
after its last finished epoch; the file goes once the run is written. Clips are decoded
once and kept in memory (the demo corpus is small); batches hold clips of similar length,
so little is padding.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch
from torch import nn
from tqdm.auto import tqdm

from speechstack import interrupt
from speechstack.artifacts import atomic_path, atomic_write_frame, atomic_write_json
from speechstack.audio import audio_info, read_audio
from speechstack.augment import build_waveform_augment
from speechstack.checkpoint import FoldCheckpoint, capture_random_state, restore_random_state
from speechstack.config import BeamConfig, Config, load_config, save_config
from speechstack.data import pad_waveforms
from speechstack.lock import RunLock
from speechstack.models import ModelContext, create_model
from speechstack.models.ctc import CTCModel, best_path
from speechstack.models.whisper import WhisperSeq2Seq
from speechstack.tasks import create_task
from speechstack.text import TextConfig, Tokenizer, Vocabulary, normalise
from speechstack.train import seed_everything, warmup_cosine
from speechstack.transcripts import (
    HYPOTHESIS,
    REFERENCE,
    ErrorRates,
    error_rates,
    write_report,
)

VOCABULARY = "vocab.json"
LANGUAGE_MODEL = "lm.json"  # predict.beam.language_model: train
MODEL = "model.pt"
CHECKPOINT = "checkpoint.pt"  # after every epoch; removed when the run is written
REPORT_GROUPS = ("gender", "locale", "group")
if TYPE_CHECKING:
    from speechstack.beam import LanguageModel

Search = Callable[[np.ndarray], list[int]]  # one clip's log-probabilities -> its token ids


def tokenizer_of(model: nn.Module, vocabulary: Vocabulary) -> Tokenizer:
    """What ``model``'s targets and decoded ids are tokens of: its own tokenizer where it
    has one (``whisper_seq2seq`` with ``tokenizer: whisper``: Whisper's BPE, normalising
    with the vocabulary's settings), else the run's character ``vocabulary``."""
    own = model.text_tokenizer(vocabulary.config) if isinstance(model, WhisperSeq2Seq) else None
    return vocabulary if own is None else own


class Utterances:
    """The clips of a manifest (float32 waveforms at the task's rate, by index) and, where
    the manifest has a ``sentence`` column, their token ids. ``in_memory`` decodes every
    clip once and keeps it; otherwise only each file's duration is read up front (to batch
    clips of similar length) and a clip is decoded whenever it is asked for, so a corpus
    larger than memory trains and transcribes with one batch of audio in memory."""

    def __init__(
        self,
        manifest: pl.DataFrame,
        tokenizer: Tokenizer,
        sample_rate: int,
        progress: bool,
        in_memory: bool = True,
    ) -> None:
        self.manifest = manifest
        self.sample_rate = sample_rate
        self.paths = list(manifest["path"])
        sentences = manifest["sentence"] if "sentence" in manifest.columns else []
        self.tokens = [tokenizer.encode(sentence) for sentence in sentences]
        empty = [name for name, ids in zip(manifest["fname"], self.tokens, strict=False) if not ids]
        if empty:
            raise ValueError(f"{len(empty)} transcripts are empty after normalisation: {empty[:3]}")
        paths = tqdm(self.paths, desc="decode" if in_memory else "durations",
                     disable=not progress, leave=False)  # fmt: skip
        self._kept: list[np.ndarray] | None = None
        if in_memory:
            self._kept = [read_audio(path, sample_rate) for path in paths]
            self.lengths = [len(waveform) for waveform in self._kept]
        else:
            self.lengths = [round(audio_info(path)[1] * sample_rate) for path in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def waveforms(self, indices: Sequence[int]) -> list[np.ndarray]:
        """The clips ``indices``, decoded now unless they are kept."""
        if self._kept is not None:
            return [self._kept[i] for i in indices]
        return [read_audio(self.paths[i], self.sample_rate) for i in indices]

    def batches(self, size: int, rng: np.random.Generator | None) -> Iterator[list[int]]:
        """Indices in batches of clips of similar length; the batches in random order when
        ``rng`` is given (training), else in length order."""
        order = np.argsort(self.lengths, kind="stable")
        chunks = [order[i : i + size].tolist() for i in range(0, len(order), size)]
        if rng is not None:
            rng.shuffle(chunks)
        yield from chunks


def transcribe(
    model: nn.Module,
    utterances: Utterances,
    tokenizer: Tokenizer,
    batch_size: int,
    searches: Sequence[Search | None] = (None,),
) -> list[list[str]]:
    """Every utterance's transcript under each of ``searches``, in the manifest's order:
    None is best-path decoding (a CTC model) or the model's own ``decode`` (Whisper); a
    search decodes a CTC model's log-probabilities. The model runs once per batch however
    many searches there are; ``tokenizer`` (``tokenizer_of``) turns the ids into text."""
    model.eval()
    texts = [[""] * len(utterances) for _ in searches]
    with torch.inference_mode():
        for indices in utterances.batches(batch_size, None):
            interrupt.check()
            batch, lengths = pad_waveforms(utterances.waveforms(indices))
            if isinstance(model, CTCModel):
                clips = model.log_probs(batch, lengths)
                decoded = [[(search or best_path)(clip) for clip in clips] for search in searches]
            else:  # a search on another family is refused before training
                decoded = [model.decode(batch, lengths)]
            for found, ids_of in zip(texts, decoded, strict=True):
                for index, ids in zip(indices, ids_of, strict=True):
                    found[index] = tokenizer.text(ids)
    return texts


def language_model(
    beam: BeamConfig, run_dir: Path, sentences: Sequence[str] | None = None
) -> LanguageModel | None:
    """The word language model of ``predict.beam``: none; for ``train``, fitted on the
    normalised training ``sentences`` (when given) or the one the run saved; else read from
    the ARPA file it names."""
    from speechstack.beam import NgramLanguageModel, load_language_model

    if beam.language_model is None:
        return None
    if beam.language_model == "train":
        if sentences is None:
            return NgramLanguageModel.load(Path(run_dir) / LANGUAGE_MODEL)
        return NgramLanguageModel.fit(sentences, order=beam.order)
    path = Path(beam.language_model)
    if not path.is_file():
        raise FileNotFoundError(
            f"predict.beam.language_model: {path} not found (an ARPA file, or `train` for a "
            "model of the training transcripts)"
        )
    return load_language_model(path)


def beam_search(
    beam: BeamConfig, vocabulary: Vocabulary, words: LanguageModel | None
) -> Search | None:
    """``predict.beam``'s decoder of one clip's log-probabilities, or None (greedy)."""
    if beam.width == 1:
        return None
    from speechstack.beam import ctc_beam_search

    return functools.partial(
        ctc_beam_search,
        tokens=vocabulary.tokens,
        beam_width=beam.width,
        language_model=words,
        lm_weight=beam.lm_weight,
        word_bonus=beam.word_bonus,
    )


def tune_beam(
    model: nn.Module,
    dev: Utterances,
    vocabulary: Vocabulary,
    words: LanguageModel | None,
    beam: BeamConfig,
    references: Sequence[str],
    batch_size: int,
) -> tuple[BeamConfig, list[dict[str, float]]]:
    """``beam`` with the ``(lm_weight, word_bonus)`` of ``beam.grid()`` that decodes the dev
    split with the lowest WER (ties: lower CER, then the first pair), and every pair's dev
    WER and CER; ``beam`` itself and no rows when there is nothing to choose. The model runs
    once over dev for all the pairs."""
    grid = beam.grid()
    if len(grid) == 1 or words is None:
        return beam, []
    candidates = [beam.model_copy(update={"lm_weight": w, "word_bonus": b}) for w, b in grid]
    searches = [beam_search(candidate, vocabulary, words) for candidate in candidates]
    tried = []
    for candidate, hypotheses in zip(
        candidates, transcribe(model, dev, vocabulary, batch_size, searches), strict=True
    ):
        rates = error_rates(references, hypotheses)
        tried.append({"lm_weight": candidate.lm_weight, "word_bonus": candidate.word_bonus,
                      "dev_wer": rates.wer, "dev_cer": rates.cer})  # fmt: skip
    best = min(range(len(tried)), key=lambda i: (tried[i]["dev_wer"], tried[i]["dev_cer"], i))
    return candidates[best], tried


def _epoch(
    model: nn.Module,
    utterances: Utterances,
    augment: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: Config,
    rng: np.random.Generator,
) -> float:
    """One pass of training with the model's loss (CTC, or a decoder's cross-entropy);
    the mean loss per utterance."""
    model.train()
    total, count = 0.0, 0
    sample_rate = config.audio.sample_rate
    for indices in utterances.batches(config.train.batch_size, rng):
        interrupt.check()
        heard = utterances.waveforms(indices)
        if augment is not None:
            heard = [augment(waveform, sample_rate).astype(np.float32) for waveform in heard]
        batch, lengths = pad_waveforms(heard)
        loss = model.loss(batch, lengths, [utterances.tokens[i] for i in indices])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.train.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(indices)
        count += len(indices)
    return total / max(count, 1)


def _scored(manifest: pl.DataFrame, hypotheses: list[str], text: TextConfig) -> pl.DataFrame:
    """``fname``, the group columns, the normalised ``reference`` (where the manifest has
    sentences) and the ``hypothesis`` of every utterance."""
    groups = [c for c in ("gender", "locale", "accent", "group") if c in manifest.columns]
    references = (
        [pl.Series(REFERENCE, [normalise(s, text) for s in manifest["sentence"]])]
        if "sentence" in manifest.columns
        else []
    )
    return manifest.select("fname", *groups).with_columns(
        *references, pl.Series(HYPOTHESIS, hypotheses)
    )


def train_transcriber(
    config: Config,
    progress: bool = True,
    epoch_callback: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``config``'s transcriber on the task's train split, choose the epoch by the
    dev CER, transcribe dev and test and write the run folder (module notes); returns the
    metrics. ``epoch_callback(epoch, dev_wer)`` runs after every epoch (0-based; Optuna
    pruning). One process at a time per run folder: a second is refused, naming the
    first."""
    with RunLock(config.run_dir, "train", f"experiment {config.experiment!r}"):
        return _train_transcriber(config, progress, epoch_callback)


def _train_transcriber(
    config: Config, progress: bool, epoch_callback: Callable[[int, float], None] | None
) -> dict[str, Any]:
    started = time.perf_counter()
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed)
    task = create_task(config.task)
    if not hasattr(task, "dev_manifest"):
        raise ValueError(f"task {config.task.name!r} holds no transcripts: use a transcript task")
    text = TextConfig()
    train_rows = task.train_manifest()
    vocabulary = Vocabulary.build(train_rows["sentence"], text)
    context = ModelContext(len(vocabulary), vocabulary.tokens, config.audio, config.features,
                           config.augment.spec_augment)  # fmt: skip
    model = create_model(config.model.name, context, **config.model.params)
    tokenizer = tokenizer_of(model, vocabulary)
    sample_rate = config.audio.sample_rate
    kept = config.audio.in_memory
    train = Utterances(train_rows, tokenizer, sample_rate, progress, kept)
    dev = Utterances(task.dev_manifest(), tokenizer, sample_rate, progress, kept)
    test_rows = task.test_manifest()
    test = (
        None if test_rows is None else Utterances(test_rows, tokenizer, sample_rate, progress, kept)
    )
    beam = config.predict.beam
    if beam.width > 1 and not isinstance(model, CTCModel):
        raise ValueError(
            f"predict.beam is for CTC recognisers; {config.model.name!r} decodes with its "
            "own model.params.num_beams"
        )
    sentences = [normalise(sentence, text) for sentence in train.manifest["sentence"]]
    words = language_model(beam, config.run_dir, sentences)  # an ARPA file is read now
    augment = build_waveform_augment(config.augment, task.noise_files())
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],  # frozen parts stay out
        lr=config.train.lr,
        weight_decay=config.train.weight_decay,
    )
    steps = config.train.epochs * -(-len(train) // config.train.batch_size)
    scheduler = warmup_cosine(optimizer, steps, config.train.warmup_fraction)
    rng = np.random.default_rng(config.train.seed)
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    checkpoint = FoldCheckpoint(run_dir / CHECKPOINT, config.identity(), config.train.checkpoint)
    dev_references = [normalise(sentence, text) for sentence in dev.manifest["sentence"]]
    first = 1
    state = checkpoint.load()
    if state is not None:  # a run interrupted or killed after a finished epoch
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best, best_state = state["history"], state["best"], state["best_state"]
        restore_random_state(state["random"], {"loop": rng}, {})
        first = state["epoch"] + 1
        if progress:
            print(f"resuming {run_dir} after epoch {state['epoch']}")
    for epoch in range(first, config.train.epochs + 1):
        loss = _epoch(model, train, augment, optimizer, scheduler, config, rng)
        rates = error_rates(
            dev_references, transcribe(model, dev, tokenizer, config.predict.batch_size)[0]
        )
        history.append(
            {"epoch": epoch, "train_loss": loss, "dev_wer": rates.wer, "dev_cer": rates.cer}
        )
        if progress:
            print(f"epoch {epoch:2d}/{config.train.epochs}: loss {loss:.3f}, "
                  f"dev WER {rates.wer:.3f}, CER {rates.cer:.3f}")  # fmt: skip
        if best is None or rates.cer < best["dev_cer"]:
            best = history[-1]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if epoch_callback is not None:
            epoch_callback(epoch - 1, rates.wer)
        checkpoint.save({
            "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "history": history, "best": best,
            "best_state": best_state, "random": capture_random_state({"loop": rng}, {}),
        })  # fmt: skip
    assert best is not None and best_state is not None
    model.load_state_dict(best_state)
    with atomic_path(run_dir / MODEL, ".pt") as temp:
        torch.save({"state_dict": best_state, "tokens": list(vocabulary.tokens)}, temp)
    vocabulary.save(run_dir / VOCABULARY)
    beam, tuning = tune_beam(
        model, dev, vocabulary, words, beam, dev_references, config.predict.batch_size
    )
    if tuning:  # the saved run decodes (and predict decodes) with the pair dev chose
        config = config.model_copy(deep=True)
        config.predict.beam = beam
        if progress:
            print(f"beam: lm_weight {beam.lm_weight}, word_bonus {beam.word_bonus} (lowest dev "
                  f"WER of {len(tuning)} pairs)")  # fmt: skip
    save_config(config, run_dir / "config.yaml")
    atomic_write_frame(run_dir / "history.csv", pl.DataFrame(history))
    if words is not None and beam.language_model == "train":
        words.save(run_dir / LANGUAGE_MODEL)
    search = beam_search(beam, vocabulary, words)
    results: dict[str, ErrorRates] = {}
    greedy: dict[str, float] = {}  # with a beam search: what best-path decoding scores
    scored: dict[str, pl.DataFrame] = {}
    for name, utterances in (("dev", dev), ("test", test)):
        if utterances is None:  # a corpus without a test split
            continue
        searches = (None,) if search is None else (search, None)  # None: the best path beside
        hypotheses, *best_paths = transcribe(
            model, utterances, tokenizer, config.predict.batch_size, searches
        )
        frame = _scored(utterances.manifest, hypotheses, text)
        atomic_write_frame(run_dir / f"{name}.csv", frame)
        if REFERENCE in frame.columns:  # a test split without sentences is only transcribed
            results[name] = error_rates(frame[REFERENCE], frame[HYPOTHESIS])
            scored[name] = frame
            for best_path_texts in best_paths:
                rates = error_rates(frame[REFERENCE], best_path_texts)
                greedy.update({f"{name}_wer": rates.wer, f"{name}_cer": rates.cer})
    reported = "test" if "test" in scored else "dev"  # the held-out split that has answers
    groups = [c for c in REPORT_GROUPS if c in scored[reported].columns]
    write_report(scored[reported], run_dir, groups, f"{config.experiment}: {reported} transcripts")
    metrics = {
        "experiment": config.experiment,
        "best_epoch": best["epoch"],
        "dev_wer": results["dev"].wer,
        "dev_cer": results["dev"].cer,
        "decoding": "greedy" if search is None else beam.model_dump(),
        "greedy": greedy or None,  # the same splits by best path, beside a beam search's
        "beam_tuning": tuning or None,  # each (lm_weight, word_bonus) pair's dev WER/CER
        "test_wer": results["test"].wer if "test" in results else None,
        "test_cer": results["test"].cer if "test" in results else None,
        "report": reported,
        "tokens": len(tokenizer),  # characters (+ specials), or Whisper's BPE vocabulary
        "train_utterances": len(train),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": time.perf_counter() - started,
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    checkpoint.remove()
    return metrics


def is_transcriber_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a speech-recognition run (its vocabulary)."""
    return (Path(run_dir) / VOCABULARY).is_file()


def transcribe_manifest(
    config: Config, run_dir: Path, manifest: pl.DataFrame, progress: bool = True
) -> pl.DataFrame:
    """``path`` (the manifest's ``fname``) and ``sentence``: the transcripts of
    ``manifest``'s clips by the finished run in ``run_dir`` (its saved config, weights and
    vocabulary)."""
    weights = Path(run_dir) / MODEL
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: the run is not trained (`make train`)")
    saved_config = load_config(Path(run_dir) / "config.yaml")
    vocabulary = Vocabulary.load(Path(run_dir) / VOCABULARY)
    try:
        saved = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{weights} cannot be loaded ({type(error).__name__}: {error}); train it again"
        ) from error
    if list(saved["tokens"]) != list(vocabulary.tokens):
        raise ValueError(f"{weights} and {Path(run_dir) / VOCABULARY} do not belong together")
    context = ModelContext(len(vocabulary), vocabulary.tokens, saved_config.audio,
                           saved_config.features, saved_config.augment.spec_augment)  # fmt: skip
    model = create_model(saved_config.model.name, context, **saved_config.model.params)
    model.load_state_dict(saved["state_dict"])
    tokenizer = tokenizer_of(model, vocabulary)
    beam = saved_config.predict.beam
    search = beam_search(beam, vocabulary, language_model(beam, Path(run_dir)))
    utterances = Utterances(manifest.drop("sentence", strict=False), tokenizer,
                            saved_config.audio.sample_rate, progress,
                            config.audio.in_memory)  # fmt: skip
    (sentences,) = transcribe(model, utterances, tokenizer, config.predict.batch_size, (search,))
    return pl.DataFrame({"path": manifest["fname"], "sentence": sentences})


def test_transcripts(run_dir: Path) -> tuple[pl.DataFrame, float]:
    """The finished run's transcripts of its task's test split (``fname``, ``sentence``)
    and its dev WER: what a transcript submission is made of."""
    run_dir = Path(run_dir)
    test = run_dir / "test.csv"
    if not test.is_file():
        raise FileNotFoundError(
            f"{test} not found: the run is not trained (`make train`), or its task has no "
            "test split to transcribe"
        )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    frame = pl.read_csv(test, infer_schema_length=0)  # ids stay text ("0012" is not 12)
    frame = frame.select("fname", sentence=pl.col(HYPOTHESIS).fill_null(""))
    return frame, float(metrics["dev_wer"])


def score_transcripts(
    predictions: pl.DataFrame, answers: Path, run_dir: Path, key: str = "path"
) -> ErrorRates:
    """WER/CER of ``predictions`` (``key``, ``sentence``: ``transcribe_manifest``'s, or a
    submission's ``id,sentence``) against an answer CSV with the same two columns
    (normalised as the run's vocabulary normalises)."""
    truth = pl.read_csv(answers, infer_schema_length=0)
    missing = [column for column in (key, "sentence") if column not in truth.columns]
    if missing:
        raise ValueError(f"{answers}: needs columns {key} and sentence (missing {missing})")
    joined = predictions.join(truth.select(key, reference="sentence"), on=key)
    if joined.height < predictions.height:
        raise ValueError(f"{answers}: no sentence for some transcribed files")
    text = Vocabulary.load(Path(run_dir) / VOCABULARY).config
    return error_rates([normalise(r, text) for r in joined["reference"]], joined["sentence"])
