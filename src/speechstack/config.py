"""Typed experiment configuration: YAML files layered on a base, CLI overrides, strict keys.

An experiment file may name a ``base`` file, or a list of them (relative to itself, merged in
order); the experiment's keys are merged over the bases', recursively, so a task's
``base.yaml`` and a model family's ``configs/models/<family>.yaml`` are written once and
composed. ``configs/<task>/<family>.yaml`` may be left out: it then means the task's
``base.yaml`` composed with ``configs/models/<family>.yaml`` (``composed_experiment``). CLI
overrides are ``key.sub=value`` strings whose values are parsed as YAML scalars. Every
section is a pydantic model that rejects unknown keys; the task's and the model's ``params``
are validated by the schema registered under their name in ``speechstack.params`` (this
layer: a config validates without importing torch or the model families).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the file and the key."""


class Strict(BaseModel):
    """Base for every config section: unknown keys are an error, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskConfig(Strict):
    name: str = "speech_commands"  # a registered task (speechstack.tasks)
    data_dir: Path = Path("data/speech_commands")  # dataset root in the task's real layout
    params: dict[str, Any] = Field(default_factory=dict)  # validated by the task's schema
    # names folds/<dataset>.csv, runs/<dataset>/ and the studies (default: the task's name),
    # so two datasets read by one reader (e.g. two `manifest` sheets) never share them
    dataset: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")

    @property
    def dataset_name(self) -> str:
        return self.dataset or self.name


class AudioConfig(Strict):
    """How files become model inputs. The model always sees windows of ``clip_seconds``.

    Fixed-length tasks (``max_seconds: null``) pad or centre-crop every file to one window.
    Variable-length tasks keep up to ``max_seconds`` of each file (longer files are
    centre-cropped to it); training takes a random ``clip_seconds`` crop of the clip, and
    prediction averages the class probabilities of sliding windows ``window_hop_seconds``
    apart that cover the whole clip."""

    sample_rate: int = Field(16000, gt=0)  # Hz; every clip is resampled to it
    clip_seconds: float = Field(1.0, gt=0)  # the window the model sees (s)
    max_seconds: float | None = Field(None, gt=0)  # audio kept per file (s); null = one window
    window_hop_seconds: float | None = Field(None, gt=0)  # prediction windows' hop (s);
    #   null = half a window
    speaker_level: bool = False  # move each speaker's mean speech level to one reference
    #   (speakers.py): with features.norm none, level relative to the speaker's own
    in_memory: bool = True  # speech recognition: decode every utterance once and keep it;
    #   false: only durations are read up front and each utterance is decoded when its
    #   batch comes (a corpus larger than memory)

    @model_validator(mode="after")
    def _window_fits(self) -> AudioConfig:
        if self.max_seconds is not None and self.max_seconds < self.clip_seconds:
            raise ValueError(
                f"max_seconds ({self.max_seconds}) must be >= clip_seconds ({self.clip_seconds})"
            )
        return self

    @property
    def clip_samples(self) -> int:
        """Samples per model window."""
        return round(self.sample_rate * self.clip_seconds)

    @property
    def variable_length(self) -> bool:
        return self.max_seconds is not None

    @property
    def max_samples(self) -> int:
        """Samples kept per file (one window for fixed-length tasks)."""
        seconds = self.max_seconds if self.max_seconds is not None else self.clip_seconds
        return round(self.sample_rate * seconds)

    @property
    def hop_samples(self) -> int:
        """Samples between the starts of two prediction windows."""
        if self.window_hop_seconds is None:
            return max(1, self.clip_samples // 2)
        return max(1, round(self.sample_rate * self.window_hop_seconds))


class PcenConfig(Strict):
    """Per-channel energy normalisation (Wang et al. 2017, "Trainable frontend for robust and
    far-field keyword spotting") in place of the dB scale: each mel band's power ``E`` is
    divided by its own running average ``M`` (an exponential moving average over
    ``time_constant`` seconds, started at the first frame), then compressed:
    ``(E / (eps + M)**alpha + delta)**r - delta**r``. Stationary noise and a room's tail
    raise ``M`` and so are divided away, where the dB scale only shifts them; onsets stand
    out. With ``trainable`` the per-band ``alpha``, ``delta`` and ``r`` are learnt (in log
    space, from these values)."""

    time_constant: float = Field(0.4, gt=0)  # seconds of the smoother
    alpha: float = Field(0.98, gt=0)  # gain normalisation strength (1: full)
    delta: float = Field(2.0, gt=0)  # bias before the root compression
    r: float = Field(0.5, gt=0, le=1)  # root compression exponent
    eps: float = Field(1e-6, gt=0)  # floor of the smoother (silence)
    trainable: bool = True


class FeatureConfig(Strict):
    """Log-mel spectrogram settings (computed in torch on the model's device)."""

    n_fft: int = Field(512, gt=0)  # samples
    win_length: int = Field(400, gt=0)  # samples (25 ms at 16 kHz)
    hop_length: int = Field(160, gt=0)  # samples (10 ms at 16 kHz)
    n_mels: int = Field(64, gt=0)
    f_min: float = Field(20.0, ge=0)  # Hz
    f_max: float | None = None  # Hz; None = sample_rate / 2
    # clip: subtract each clip's mean dB (its gain); band: subtract each mel band's mean
    # over the clip's frames (its gain and any fixed channel/EQ colouring: cepstral mean
    # normalisation); none: keep the level (a cue for emotion, a nuisance for words)
    norm: Literal["clip", "band", "none"] = "clip"
    # keep only the first `lifter` cepstral coefficients of each frame (a DCT along the mel
    # axis, truncated, transformed back to n_mels bands): the smooth spectral envelope stays
    # (formants: what words are made of), the pitch harmonics and fine structure go (what
    # one voice has and another lacks); None = the log-mel as computed
    lifter: int | None = Field(None, gt=0)
    # per-channel energy normalisation of the mel power instead of the dB scale (PcenConfig);
    # None = log-mel in dB
    pcen: PcenConfig | None = None

    @model_validator(mode="after")
    def _window_fits(self) -> FeatureConfig:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if self.lifter is not None and self.lifter > self.n_mels:
            raise ValueError(f"lifter ({self.lifter}) must be <= n_mels ({self.n_mels})")
        if self.lifter is not None and self.pcen is not None:
            raise ValueError("lifter works on dB values: it cannot be combined with pcen")
        return self


class Probability(Strict):
    p: float = Field(0.0, ge=0, le=1)  # chance the transform is applied to a clip


class ShiftAugment(Probability):
    max_fraction: float = Field(0.1, ge=0, le=1)  # of the clip length, either direction


class PlacementAugment(Probability):
    """Move the spoken part to a random position: the clip is rolled so that its loud span
    (frames within ``threshold_db`` of the loudest) lands anywhere inside the window; what
    wraps around is the clip's own background."""

    threshold_db: float = Field(-30.0, le=0)  # dB below the loudest 10 ms frame


class NoiseAugment(Probability):
    """A window of a task noise file (Speech Commands' ``_background_noise_``)."""

    min_snr_db: float = 3.0
    max_snr_db: float = 30.0


class ColoredNoiseAugment(Probability):
    """Noise whose power falls as 1/f**exponent (-2 violet, 0 white, 1 pink, 2 brown)."""

    min_snr_db: float = 0.0
    max_snr_db: float = 30.0
    min_exponent: float = -2.0
    max_exponent: float = 2.0


class MixAugment(Probability):
    """Other training clips (other speakers, any label) mixed in below the clip: a voice
    in the background, or with ``max_voices`` > 1 a crowd of ``min_voices``..``max_voices``
    voices at equal level whose sum is set to the SNR (babble, where no single word
    stands out)."""

    min_snr_db: float = 10.0
    max_snr_db: float = 25.0
    min_voices: int = Field(1, ge=1)
    max_voices: int = Field(1, ge=1)


class ReverbAugment(Probability):
    """Convolution with a synthetic room impulse response (exponentially decaying noise)."""

    min_rt60: float = Field(0.15, gt=0)  # seconds for the tail to fall by 60 dB
    max_rt60: float = Field(0.9, gt=0)


class BandAugment(Probability):
    """A band-pass channel (telephone, cheap microphone): high-pass at a cut-off drawn from
    ``low_hz`` and low-pass at one drawn from ``high_hz`` (a range [min, max] each, Hz)."""

    min_low_hz: float = Field(50.0, gt=0)
    max_low_hz: float = Field(400.0, gt=0)
    min_high_hz: float = Field(2500.0, gt=0)
    max_high_hz: float = Field(7500.0, gt=0)


class SpeedAugment(Probability):
    """Resampling by ``rate``: tempo, pitch and formants move together (a longer or
    shorter vocal tract); cheap, unlike ``pitch``/``stretch``."""

    min_rate: float = Field(0.85, gt=0)
    max_rate: float = Field(1.15, gt=0)


class PitchAugment(Probability):
    min_semitones: float = -2.0
    max_semitones: float = 2.0


class StretchAugment(Probability):
    min_rate: float = Field(0.85, gt=0)
    max_rate: float = Field(1.15, gt=0)


class EqAugment(Probability):
    """A random equaliser (audiomentations' ``SevenBandParametricEQ``: peaking filters at
    seven fixed centres, 100 Hz-7.5 kHz, each with a gain drawn from ``min_gain_db``..
    ``max_gain_db``): the timbre of another vocal tract and microphone, where ``band`` only
    cuts the ends of the spectrum."""

    min_gain_db: float = -12.0
    max_gain_db: float = 12.0


class SpecAugmentConfig(Probability):
    time_masks: int = Field(2, ge=0)
    time_width: int = Field(10, ge=0)  # frames
    freq_masks: int = Field(2, ge=0)
    freq_width: int = Field(8, ge=0)  # mel bins
    # Vocal-tract length perturbation: the power spectrum of a clip is stretched along the
    # frequency axis by a factor drawn from [1 - warp, 1 + warp] (chance ``warp_p``, drawn
    # independently of the masks): formants move as with another speaker's vocal tract
    # while the tempo stays, unlike ``augment.speed``
    warp_p: float = Field(0.0, ge=0, le=1)
    warp: float = Field(0.1, ge=0, lt=1)


class MixupConfig(Probability):
    alpha: float = Field(0.4, gt=0)  # Beta(alpha, alpha) mixing weight


class AugmentConfig(Strict):
    """Training-only augmentation. Waveform transforms run in the data loader, in the
    order of the fields below (placement and voice first, the room next, the channel
    last); SpecAugment runs in the model on the device; mixup in the loop.

    There is no gain/level transform: the log-mel front-end subtracts each clip's mean
    level, so a gain changes nothing the model sees; level matters only against noise,
    which the noise transforms draw by SNR."""

    placement: PlacementAugment = Field(default_factory=PlacementAugment)
    shift: ShiftAugment = Field(default_factory=ShiftAugment)
    speed: SpeedAugment = Field(default_factory=SpeedAugment)
    pitch: PitchAugment = Field(default_factory=PitchAugment)
    stretch: StretchAugment = Field(default_factory=StretchAugment)
    eq: EqAugment = Field(default_factory=EqAugment)
    mix: MixAugment = Field(default_factory=MixAugment)
    reverb: ReverbAugment = Field(default_factory=ReverbAugment)
    noise: NoiseAugment = Field(default_factory=NoiseAugment)
    colored_noise: ColoredNoiseAugment = Field(default_factory=ColoredNoiseAugment)
    band: BandAugment = Field(default_factory=BandAugment)
    spec_augment: SpecAugmentConfig = Field(default_factory=SpecAugmentConfig)
    mixup: MixupConfig = Field(default_factory=MixupConfig)


class ShiftedValidationConfig(Strict):
    """Test-like conditions for a second pass over each fold's validation clips
    (``oof_shifted.parquet``): noise kinds the training augmentation never uses, low SNR,
    reverberant rooms and narrow channels, drawn per clip from ``seed`` and the clip's name
    (the same for every experiment). The stacker is fitted on these rows and the
    submission's source is chosen by its score on them."""

    enabled: bool = True
    noise_p: float = Field(0.85, ge=0, le=1)
    min_snr_db: float = 0.0
    max_snr_db: float = 20.0
    reverb_p: float = Field(0.5, ge=0, le=1)
    band_p: float = Field(0.35, ge=0, le=1)
    seed: int = 0


class FoldsConfig(Strict):
    k: int = Field(5, ge=2)
    seed: int = 42
    file: Path | None = None  # default folds/<task>.csv


class ModelConfig(Strict):
    name: str = "cnn"  # a registered model family (speechstack.models)
    params: dict[str, Any] = Field(default_factory=dict)  # validated by the family's schema


class DistillConfig(Strict):
    """Training on a teacher's soft labels (``make distill``): every folded training clip's
    target is the teacher's out-of-fold probabilities, every test clip joins the training
    side with the teacher's test probabilities, each sharpened or softened as
    ``p ** (1 / temperature)`` and mixed with the true (or the teacher's) label; the loss is
    ``temperature ** 2`` times the cross-entropy of ``softmax(logits / temperature)``."""

    teacher: str | None = None  # a stack or experiment of the task (None: no distillation)
    temperature: float = Field(2.0, gt=0)
    weight: float = Field(0.9, ge=0, le=1)  # the teacher's share of each soft target
    test_clips: bool = True  # the test clips join every fold's training side (never validated)


class TrainConfig(Strict):
    epochs: int = Field(16, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)  # peak learning rate (linear warm-up, cosine decay)
    weight_decay: float = Field(1e-2, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)  # of all steps
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    grad_clip: float | None = Field(5.0, gt=0)  # max global grad norm; None = off
    num_workers: int = Field(0, ge=0)  # DataLoader worker processes
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16)
    threads: int | None = Field(None, ge=1)  # torch CPU threads; None = torch's default
    # folds `train` trains at once, each in its own process, the CPU cores shared between
    # them; auto: one per core (at most one per fold) on the CPU, 1 on a GPU or under torchrun
    parallel_folds: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    # after every epoch, the whole training state (model, optimiser, scheduler, scaler, RNGs,
    # best epoch so far) goes to runs/.../checkpoints/fold<k>.pt: a killed fold resumes there
    checkpoint: bool = True
    # per epoch, the clips of each listed label are drawn afresh (without replacement) up to
    # `ratio` x the mean clip count of the other labels on the training side, so a large
    # label (Speech Commands' `unknown`) is seen in full over the epochs without swamping any
    # one of them; every other clip is shown every epoch
    label_quota: dict[str, float] = Field(default_factory=dict)
    # clips that are a segment of a longer file (silence cut from the noise files) take a
    # fresh random offset in that file every epoch; validation keeps the manifest's segment
    fresh_segments: bool = True
    # CSV of pseudo-labelled test clips (fname, path, label: `speechstack pseudo`) added to
    # the training side of every fold, never to a validation side
    pseudo_labels: Path | None = None
    # chance that a training clip is made a non-word (played backwards, or its first half
    # spliced to another clip's second half) labelled with the task's `unknown` class: the
    # model learns a place for speech that is no word it knows (data.SyntheticUnknown)
    synthetic_unknown: float = Field(0.0, ge=0, lt=1)
    # an experiment of the task whose fold k best weights start fold k (a warm start: a
    # pseudo round fine-tunes the round before instead of training from nothing); its fold
    # must have validated exactly this fold's clips and learnt the same classes
    init_from: str | None = None
    distill: DistillConfig = Field(default_factory=DistillConfig)

    @model_validator(mode="after")
    def _positive_quota(self) -> TrainConfig:
        bad = {label: ratio for label, ratio in self.label_quota.items() if ratio <= 0}
        if bad:
            raise ValueError(f"label_quota ratios must be > 0, got {bad}")
        return self


class TtaView(Strict):
    """One test-time view of a window: circularly shifted and/or resampled."""

    shift_seconds: float = 0.0  # roll right (negative: left), the window's own audio wraps
    speed: float = Field(1.0, gt=0)  # resampling rate: > 1 faster and higher


class BeamConfig(Strict):
    """How a CTC recogniser's final dev and test transcripts (and ``predict``'s) are decoded
    (``beam.py``); the per-epoch dev score that picks the best epoch stays greedy. Whisper
    decodes with its own ``model.params.num_beams``."""

    width: int = Field(1, ge=1)  # prefixes kept per step; 1 = greedy best path
    # a word n-gram fused into the search: null = none; `train` = fitted on the training
    # transcripts (interpolated Kneser-Ney, saved with the run as lm.json); else the path of
    # an ARPA file (KenLM's lmplz or SRILM writes one from any text)
    language_model: str | None = None
    order: int = Field(3, ge=1)  # words of context + 1, of the `train` model
    lm_weight: float = Field(0.5, ge=0)  # x the LM's log-probability of each word
    word_bonus: float = 1.0  # added per word (with a language model), against short outputs
    # tuned on the dev split after training: every pair of these (an empty list: the value
    # above alone) decodes dev, the lowest dev WER wins (ties: lower CER, then the first) and
    # becomes lm_weight/word_bonus of the saved run, so predict decodes with it
    lm_weights: list[Annotated[float, Field(ge=0)]] = Field(default_factory=list)
    word_bonuses: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _model_needs_beams(self) -> BeamConfig:
        if self.language_model is not None and self.width == 1:
            raise ValueError("predict.beam.language_model needs predict.beam.width > 1")
        if (self.lm_weights or self.word_bonuses) and self.language_model is None:
            raise ValueError(
                "predict.beam.lm_weights/word_bonuses tune a language model's weight: set "
                "predict.beam.language_model (train, or an ARPA file) too"
            )
        return self

    def grid(self) -> list[tuple[float, float]]:
        """The ``(lm_weight, word_bonus)`` pairs tried on dev (one: no tuning)."""
        weights = self.lm_weights or [self.lm_weight]
        bonuses = self.word_bonuses or [self.word_bonus]
        return [(weight, bonus) for weight in weights for bonus in bonuses]


class PredictConfig(Strict):
    batch_size: int = Field(256, ge=1)
    num_workers: int = Field(0, ge=0)
    # test-time augmentation: class probabilities averaged over these views of every window
    # (OOF rows, shifted OOF rows, the test set and `predict` alike); [] = the window as is
    tta: list[TtaView] = Field(default_factory=list)
    # re-estimate a network's batch-norm statistics on the clips of the set it predicts
    # (test-time adaptation, tta.adapt_batch_norm): the test set, the shifted OOF rows and
    # `predict`'s folder when it holds at least `adapt_min_clips` clips (fewer: the training
    # statistics, with a note); the clean OOF rows and the ONNX runtime keep the training's
    adapt_norm: bool = False
    adapt_min_clips: int = Field(100, ge=1)
    shifted_validation: ShiftedValidationConfig = Field(default_factory=ShiftedValidationConfig)
    beam: BeamConfig = Field(default_factory=BeamConfig)  # speech recognition (CTC) only


Runtime = Literal["torch", "onnx", "onnx-int8"]  # what predicts: the PyTorch fold models,
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnx", "onnx-int8")  # or the exported ONNX files


class SpotConfig(Strict):
    """``speechstack spot``: keywords found in recordings of any length by sliding the
    trained classifier over them (``speechstack.spot``). Windows are the model's own
    ``audio.clip_seconds``; a keyword is reported at a peak of its smoothed score."""

    hop_seconds: float = Field(0.1, gt=0)  # between the starts of two scored windows (s)
    # moving average over this many windows (1 = none) and the lowest smoothed probability
    # reported: chosen on long recordings of another demo seed (README, Deploy)
    smooth_windows: int = Field(9, ge=1)
    threshold: float = Field(0.4, ge=0, le=1)
    refractory_seconds: float = Field(0.8, ge=0)  # no two detections closer than this (s)
    ignore: list[str] = Field(default_factory=lambda: ["silence", "unknown"])  # never reported
    batch_size: int = Field(64, ge=1)  # windows scored at once


class PseudoConfig(Strict):
    """``speechstack pseudo``: confident test clips, with the predicted label, for the training
    side of the next round's folds."""

    source: str | None = None  # run whose test probabilities decide (default stack.name)
    threshold: float = Field(0.9, gt=0, le=1)  # minimum top probability
    agreement: bool = True  # every experiment of the source must predict the same label
    max_share: float = Field(1.0, gt=0, le=1)  # at most this share of the test set
    round: int = Field(1, ge=1)  # output runs/<task>/pseudo/round<round>.csv


class LightGBMParams(Strict):
    """Small and strongly regularised: the stacker sees only the OOF rows (a few thousand
    on a small corpus), and a deep one learns a confidence the shifted test does not have."""

    n_estimators: int = Field(150, ge=1)
    learning_rate: float = Field(0.03, gt=0)
    num_leaves: int = Field(3, ge=2)
    min_child_samples: int = Field(50, ge=1)
    subsample: float = Field(1.0, gt=0, le=1)
    subsample_freq: int = Field(0, ge=0)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    reg_lambda: float = Field(10.0, ge=0)
    n_jobs: int = Field(2, ge=1)


class StackConfig(Strict):
    """LightGBM over the out-of-fold probabilities of ``experiments`` (same task, same folds)."""

    name: str = "stack"  # output folder: runs/<task>/<name>/
    experiments: list[str] = Field(default_factory=lambda: ["cnn"], min_length=1)
    lightgbm: LightGBMParams = Field(default_factory=LightGBMParams)
    seed: int = 0
    # the kept source is the simplest (mean, members, LightGBM) whose score is below the
    # best's by at most this many standard errors of their paired per-clip difference
    margin_se: float = Field(2.0, ge=0)


class SolutionExperiment(Strict):
    """One family of the recipe: an experiment file and dotted overrides for it."""

    config: Path  # experiment YAML, relative to the recipe file
    set: dict[str, Any] = Field(default_factory=dict)  # e.g. {train.epochs: 12}


class SolutionConfig(Strict):
    """``speechstack solution`` / ``make solution``: train ``experiments`` on every fold,
    stack them, then ``pseudo_rounds`` times add the stack's confident test clips to every
    fold's training side and retrain ``retrain`` (default: all) as ``<experiment>-r<round>``,
    stacked again; the last stack writes the submission."""

    experiments: list[SolutionExperiment] = Field(default_factory=list)
    pseudo_rounds: int = Field(0, ge=0)
    retrain: list[str] | None = None  # experiment names retrained in the pseudo rounds
    retrain_set: dict[str, Any] = Field(default_factory=dict)  # dotted overrides for them in
    #   those rounds, after their own `set` (e.g. {train.epochs: 36}: a larger training side
    #   at fewer epochs)
    # each retrained family's fold k starts from its previous round's fold k (train.init_from):
    # a round fine-tunes (retrain_set then sets its few epochs and lower lr) instead of
    # training from nothing
    warm_start: bool = False


class SearchDimension(Strict):
    """One tuned config key: a float or int range, or a list of choices (an Optuna
    distribution). ``log`` samples the range on a log scale; ``step`` discretises it."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[bool | int | float | str | None] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SearchDimension:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical dimension needs a non-empty 'choices' list")
            extra = [
                name
                for name, value in (("low", self.low), ("high", self.high), ("step", self.step))
                if value is not None
            ] + (["log"] if self.log else [])
            if extra:
                raise ValueError(f"a categorical dimension takes only 'choices', not {extra}")
            return self
        if self.choices is not None:
            raise ValueError(f"a {self.type} dimension takes 'low' and 'high', not 'choices'")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} dimension needs both 'low' and 'high'")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is greater than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log=true needs low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("'log' and 'step' cannot be combined")
        if self.type == "int":
            bounds = {"low": self.low, "high": self.high, "step": self.step}
            fractional = [k for k, v in bounds.items() if v is not None and v != int(v)]
            if fractional:
                raise ValueError(f"an int dimension needs whole numbers for {fractional}")
        return self


class PretrainConfig(Strict):
    """``speechstack pretrain``: wav2vec 2.0 pre-trained from scratch, self-supervised, on a
    folder of unlabelled audio (``speechstack.pretrain``): masked latent frames are told from
    distractors by a contrastive loss over Gumbel-quantised targets, plus the codebook
    diversity loss. The folder it writes loads as ``model.params.pretrained`` of the
    ``wav2vec2`` and ``wav2vec2_ctc`` families."""

    size: Literal["tiny", "small", "medium", "base"] = "tiny"  # pretrain.SIZES (parameters:
    #   README); tiny is for a CPU demo
    architecture: dict[str, Any] = Field(default_factory=dict)  # Wav2Vec2Config keys over
    #   the size's own
    audio_dir: Path | None = None  # the folder of audio files (searched recursively;
    #   None: the task's data_dir)
    out: Path | None = None  # the model folder (None: <runs_dir>/pretrain/wav2vec2-<size>)
    crop_seconds: float = Field(4.0, gt=0)  # a random crop of each file per epoch
    min_seconds: float = Field(0.5, gt=0)  # shorter files are left out
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(5e-4, gt=0)  # peak (linear warm-up, cosine decay)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    mask_time_prob: float = Field(0.65, gt=0, lt=1)  # share of frames starting a masked span
    mask_time_length: int = Field(10, ge=1)  # frames per masked span (20 ms each)
    num_negatives: int = Field(100, ge=1)  # distractors per masked frame (same clip)
    diversity_weight: float = Field(0.1, ge=0)  # of the codebook diversity loss
    # Gumbel-softmax temperature of the quantiser: from the first, times the decay every
    # step, down to the second (the paper's 2 -> 0.5)
    gumbel_temperature: tuple[float, float] = (2.0, 0.5)
    gumbel_decay: float = Field(0.999995, gt=0, le=1)
    seed: int = 0


class TuneConfig(Strict):
    """Optuna study settings (``speechstack tune``). The study is ``<task>-<experiment>``;
    each trial overrides the config with values drawn from ``space`` and trains ``folds``."""

    trials: int = Field(20, ge=1)  # total trials of the study, shared by all workers
    folds: list[int] = Field(default_factory=lambda: [0], min_length=1)  # objective: mean acc
    seed: int = 0  # TPE sampler seed
    pruner: Literal["median", "hyperband", "none"] = "median"
    warmup_epochs: int = Field(4, ge=0)  # epochs a trial always trains before it can be pruned
    startup_trials: int = Field(5, ge=0)  # finished trials before pruning / TPE start
    studies_dir: Path = Path("studies")  # <task>.db (SQLite), <study>/ (plots, trial runs)
    storage: str | None = None  # RDB URL, e.g. postgresql://...; None = SQLite in studies_dir
    heartbeat_seconds: int = Field(60, ge=1)  # RUNNING trials write a heartbeat this often
    grace_seconds: int = Field(120, ge=1)  # silent this long: its worker died; failed, retried
    max_retries: int = Field(2, ge=0)  # retries of a trial whose worker died
    # dotted config key -> dimension; an experiment file adds keys to its base's space, and
    # `key: null` removes one
    space: dict[str, SearchDimension | None] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _distinct_folds(self) -> TuneConfig:
        if len(set(self.folds)) != len(self.folds) or min(self.folds) < 0:
            raise ValueError(f"folds must be distinct fold numbers >= 0 (got {self.folds})")
        return self

    @property
    def dimensions(self) -> dict[str, SearchDimension]:
        """The search space without the keys an experiment removed (``null``)."""
        return {key: value for key, value in self.space.items() if value is not None}


# Settings that do not change what a run computes (speed, where files go, where the data
# lies: what it is, each fold checks by its dataset.parquet listing; what runs after
# training): left out of a run's identity, so changing them keeps finished folds.
RESULT_NEUTRAL = {
    ("train", "num_workers"), ("train", "threads"), ("train", "parallel_folds"),
    ("train", "checkpoint"),
    ("predict", "batch_size"), ("predict", "num_workers"), ("audio", "in_memory"),
    ("runs_dir",), ("cache_dir",), ("task", "data_dir"),
    ("stack",), ("pseudo",), ("solution",), ("tune",), ("spot",), ("pretrain",),
}  # fmt: skip


class Config(Strict):
    experiment: str = "cnn"  # run folder: runs/<task>/<experiment>/
    runs_dir: Path = Path("runs")
    cache_dir: Path | None = Path("cache")  # decoded-waveform cache (None: decode every run)
    task: TaskConfig = Field(default_factory=TaskConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    folds: FoldsConfig = Field(default_factory=FoldsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    predict: PredictConfig = Field(default_factory=PredictConfig)
    stack: StackConfig = Field(default_factory=StackConfig)
    spot: SpotConfig = Field(default_factory=SpotConfig)
    pseudo: PseudoConfig = Field(default_factory=PseudoConfig)
    solution: SolutionConfig = Field(default_factory=SolutionConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)

    @model_validator(mode="after")
    def _resolve_f_max(self) -> Config:
        """``features.f_max: null`` means the Nyquist frequency: written out, so a run's saved
        config says what it computed and equal settings compare equal."""
        if self.features.f_max is None:
            self.features.f_max = self.audio.sample_rate / 2
        return self

    @property
    def folds_file(self) -> Path:
        return self.folds.file or Path("folds") / f"{self.task.dataset_name}.csv"

    @property
    def task_runs_dir(self) -> Path:
        """``runs/<dataset>/``: every experiment and stack of the task's dataset."""
        return self.runs_dir / self.task.dataset_name

    @property
    def run_dir(self) -> Path:
        return self.task_runs_dir / self.experiment

    def identity(self) -> str:
        """What a run computes, as canonical JSON: the resolved config less the
        ``RESULT_NEUTRAL`` settings. A finished fold belongs to an experiment when its saved
        config has the same identity."""
        data = self.model_dump(mode="json")
        for path in RESULT_NEUTRAL:
            node = data
            for key in path[:-1]:
                node = node[key]
            node.pop(path[-1], None)
        return json.dumps(data, sort_keys=True)

    def digest(self) -> str:
        """Short hash of ``identity``, to tell runs apart."""
        return hashlib.sha256(self.identity().encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------
# Loading


class _Loader(yaml.SafeLoader):
    """Safe YAML with the YAML 1.2 float rule, so ``1e-3`` is a float (PyYAML's YAML 1.1
    reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


MODELS_DIR = "models"  # configs/models/<family>.yaml: a family's settings, for every task


def composed_experiment(path: Path) -> list[Path] | None:
    """The files that stand for a missing ``configs/<task>/<family>.yaml``: the task's
    ``base.yaml`` and ``configs/models/<family>.yaml``, when both exist (else None)."""
    task_base = path.parent / "base.yaml"
    family = path.parent.parent / MODELS_DIR / path.name
    if path.parent.name != MODELS_DIR and task_base.is_file() and family.is_file():
        return [task_base, family]
    return None


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read ``path`` and the ``base`` files it names, merged, bases first (in order)."""
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: 'base' files form a cycle: {' -> '.join(map(str, chain))}")
    if not path.is_file():
        parts = composed_experiment(path)
        if parts is None:
            raise ConfigError(
                f"config file not found: {path} (an experiment file may be left out only "
                f"where {path.parent / 'base.yaml'} and "
                f"{path.parent.parent / MODELS_DIR / path.name} both exist)"
            )
        data = {"base": [str(part) for part in parts]}
    else:
        try:
            data = _yaml(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    base_names = data.pop("base", None)
    if base_names is None:
        return data
    if isinstance(base_names, str):
        base_names = [base_names]
    if not isinstance(base_names, list) or not all(isinstance(n, str) for n in base_names):
        raise ConfigError(f"{path}: 'base' must be a file name or a list of them")
    merged: dict[str, Any] = {}
    for name in base_names:
        merged = _merge(merged, _read_yaml(path.parent / name, (*chain, path)))
    return _merge(merged, data)


def parse_override(text: str) -> dict[str, Any]:
    """``"train.lr=1e-3"`` -> ``{"train": {"lr": 0.001}}``; the value is a YAML scalar/list."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    try:
        value = _yaml(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {error}") from error
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def _schema_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``Model``, ``Model | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for member in get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ():
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _valid_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The field names allowed at ``loc`` (the parent of an offending key); a part of ``loc``
    may also be a key of a ``dict[str, Model]`` field, such as a ``tune.space`` entry."""
    current: Any = model
    for part in loc:
        schema = _schema_in(current)
        if schema is not None:
            if part not in schema.model_fields:
                return []
            current = schema.model_fields[part].annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return []
    schema = _schema_in(current)
    return sorted(schema.model_fields) if schema else []


def format_validation_error(
    error: ValidationError, source: str, schema: type[BaseModel], prefix: str = ""
) -> str:
    """Turn pydantic's error into lines naming the source, the dotted key and valid keys."""
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        loc = tuple(item["loc"])
        key = prefix + ".".join(str(part) for part in loc)
        if item["type"] == "extra_forbidden":
            valid = _valid_keys(schema, loc[:-1])
            lines.append(f"  unknown key '{key}'; valid keys here: {', '.join(valid)}")
        else:
            lines.append(f"  '{key}': {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def validate_params(
    schema: type[Strict], params: dict[str, Any], source: str, section: str
) -> Strict:
    """Validate a registry entry's ``params`` block (task or model) against its schema."""
    try:
        return schema.model_validate(params)
    except ValidationError as error:
        raise ConfigError(
            format_validation_error(error, source, schema, prefix=f"{section}.params.")
        ) from None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Config:
    """Load an experiment file (and its bases), apply ``key=value`` overrides, validate.

    The task's and the model's ``params`` are validated by their registries' schemas, so a
    typo anywhere in the file fails here, before any work starts.
    """
    data: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    for text in overrides:
        data = _merge(data, parse_override(text))
    source = str(path) if path is not None else "<defaults>"
    if overrides:
        source += f" (with overrides {' '.join(overrides)})"
    return validate_config_data(data, source)


def validate_config_data(data: dict[str, Any], source: str) -> Config:
    """Validate a merged config mapping (and the task's and model's ``params``); ``source``
    names where it came from in error messages."""
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source, Config)) from None

    from speechstack.params import model_params_schema, task_params_schema  # not at import:
    #   speechstack.params imports this module (Strict)

    task_params = validate_params(
        task_params_schema(config.task.name), config.task.params, source, "task"
    )
    model_params = validate_params(
        model_params_schema(config.model.name), config.model.params, source, "model"
    )
    # Store the completed params (defaults filled in) so the saved config is fully resolved.
    config.task.params = task_params.model_dump(mode="json")
    config.model.params = model_params.model_dump(mode="json")
    return config


def nest_key(key: str, value: Any) -> dict[str, Any]:
    """``("train.lr", 0.001)`` -> ``{"train": {"lr": 0.001}}``."""
    nested: dict[str, Any] = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def nest_keys(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys -> one nested mapping (later keys merged over earlier ones)."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        nested = _merge(nested, nest_key(key, value))
    return nested


def override_config(config: Config, values: dict[str, Any], source: str) -> Config:
    """A copy of ``config`` with dotted keys set to ``values`` (Python values, not YAML text),
    validated like a loaded file: an unknown key or a bad value is a ConfigError naming it."""
    data = _merge(config.model_dump(mode="json"), nest_keys(values))
    return validate_config_data(data, source)


def save_config(config: Config, path: Path) -> None:
    from speechstack.artifacts import atomic_write_text

    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    atomic_write_text(path, text)
