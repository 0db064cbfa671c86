"""``model.params`` of every model family, registered by family name in ``MODEL_PARAMS``
(``speechstack.params``): the schemas only, torch-free, so a config validates without
importing the families. Each family's module in ``speechstack.models`` builds its network
from these params; the shared ``Literal`` names (pooling, frame heads, fbank windows,
openSMILE feature sets) live here and are imported back there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from speechstack.config import LightGBMParams, Strict
from speechstack.params import MODEL_PARAMS

if TYPE_CHECKING:  # an annotation only: TransformerParams imports transformers when checking
    from transformers import PretrainedConfig

PoolingName = Literal["mean", "sum", "max", "attention", "mean_max"]  # models.pooling
HeadName = Literal["none", "linear", "cnn", "lstm"]  # models.pretrained.FrameHead
WindowName = Literal["hanning", "povey", "hamming"]  # models.ast.kaldi_window
FeatureSet = Literal["eGeMAPSv02", "GeMAPSv01b", "ComParE_2016"]  # acoustic (openSMILE sets)


@MODEL_PARAMS.register("cnn")
class CNNParams(Strict):
    backbone: str = "resnet10t"  # any timm model name (timm.list_models())
    backbone_args: dict[str, Any] = Field(default_factory=dict)  # extra timm constructor
    #   arguments, e.g. {channels: [32, 64, 128, 256], stem_width: 16} for a half-width ResNet
    pretrained: bool = False  # ImageNet weights (first conv summed to one channel)
    weights_file: Path | None = None  # local .safetensors/.pth for `pretrained` without a hub
    drop_rate: float = Field(0.2, ge=0, lt=1)  # dropout before the classifier
    drop_path_rate: float = Field(0.0, ge=0, lt=1)  # stochastic depth, where supported


@MODEL_PARAMS.register("bcresnet")
class BCResNetParams(Strict):
    width: int = Field(8, ge=1)  # the paper's tau: BC-ResNet-8 (321k parameters) by default
    blocks: list[int] = Field(default_factory=lambda: [2, 2, 4, 4], min_length=4, max_length=4)
    #   broadcast blocks per stage (the first of each maps the channels)
    sub_bands: int = Field(5, ge=1)  # sub-spectral normalisation: bands of equal width;
    #   must divide the frequency bins of every stage (n_mels 40: 20, 10, 5)
    dropout: float = Field(0.1, ge=0, lt=1)  # channel dropout in every block


@MODEL_PARAMS.register("convs2s")
class ConvS2SParams(Strict):
    channels: int = Field(128, ge=1)  # width of every block (the GLU input is 2 x channels)
    layers: int = Field(6, ge=1)  # convolutional GLU blocks
    kernel_size: int = Field(5, ge=1)  # steps (frames after frame_stride), "same" padding
    dilation_growth: int = Field(2, ge=1)  # block i dilates by growth**i; 1 = the paper's
    #   undilated stack, whose 6 blocks of kernel 5 see only 0.5 s (demo fold 1: 0.80 -> 0.85)
    frame_stride: int = Field(2, ge=1)  # log-mel frames merged into one step by the projection
    position: Literal["learned", "sinusoidal", "none"] = "learned"  # position embedding
    dropout: float = Field(0.1, ge=0, lt=1)  # before the projection, each block, classifier
    pooling: PoolingName = "mean_max"  # over time: attention, mean, max, sum, mean_max


@MODEL_PARAMS.register("ctc")
class CTCParams(Strict):
    channels: int = Field(192, ge=1)  # of the convolutional front
    stride: int = Field(2, ge=1)  # frames per output step (2: 20 ms steps at a 10 ms hop)
    hidden_size: int = Field(192, ge=1)  # per direction
    layers: int = Field(3, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)


@MODEL_PARAMS.register("gru")
@MODEL_PARAMS.register("lstm")
class RecurrentParams(Strict):
    hidden_size: int = Field(128, ge=1)  # per direction
    layers: int = Field(2, ge=1)  # stacked recurrent layers
    bidirectional: bool = True
    dropout: float = Field(0.2, ge=0, lt=1)  # after the front, between layers, classifier
    front: Literal["conv", "linear", "none"] = "conv"  # before the recurrence:
    #   conv: conv1d (front_kernel, stride frame_stride) + batch norm + ReLU;
    #   linear: the same with kernel = frame_stride (a linear map of stacked frames);
    #   none: log-mel frames go straight in (frame_stride must be 1)
    front_channels: int = Field(128, ge=1)  # output width of the front (unused for none)
    front_kernel: int = Field(5, ge=1)  # frames, conv front only
    frame_stride: int = Field(2, ge=1)  # log-mel frames per recurrent step
    pooling: PoolingName = "attention"  # over time: attention, mean, max, sum, mean_max

    @model_validator(mode="after")
    def _stride_needs_front(self) -> RecurrentParams:
        if self.front == "none" and self.frame_stride != 1:
            raise ValueError("front=none feeds every frame to the recurrence: set frame_stride=1")
        return self


# LightGBM over a feature set's standardised functionals on a few thousand rows, per set:
# what is not named comes from LightGBMParams (the stacker's small, strongly regularised
# trees). ComParE (6,373 features): those trees, each drawing a tenth of the features
# (random subspaces): ~12x faster than deeper trees over half of them, and no worse on the
# demo's unseen actors; eGeMAPS and GeMAPS (under 100 features): deeper trees over half of
# them (a tenth of 88 lost 3.7 pp there). README, "Emotion on unseen actors".
_DEEPER_TREES: dict[str, Any] = {
    "n_estimators": 300,
    "learning_rate": 0.05,
    "num_leaves": 7,
    "min_child_samples": 10,
    "colsample_bytree": 0.5,
    "reg_lambda": 1.0,
}
CLASSIFIER_TREES: dict[str, dict[str, Any]] = {
    "ComParE_2016": {"colsample_bytree": 0.1},
    "eGeMAPSv02": _DEEPER_TREES,
    "GeMAPSv01b": _DEEPER_TREES,
}


@MODEL_PARAMS.register("acoustic")
class AcousticParams(Strict):
    feature_set: FeatureSet = "ComParE_2016"  # openSMILE functionals: 6,373 (ComParE),
    #   88 (eGeMAPS) or 62 (GeMAPS) per clip
    normalise: Literal["speaker", "global"] = "speaker"  # z-score each speaker's clips with
    #   their own statistics (speaker), or every clip with the training side's (global)
    augment_copies: int = Field(2, ge=0)  # training clips are also heard through the task's
    #   `augment` (noise, rooms, channels) this many times, each copy a speaker group of its own
    classifier: Literal["logistic", "lightgbm"] = "lightgbm"
    c: float = Field(0.1, gt=0)  # logistic: inverse L2 strength
    lightgbm: LightGBMParams = Field(default_factory=LightGBMParams)  # keys not given:
    #   the feature set's CLASSIFIER_TREES, then LightGBMParams

    @model_validator(mode="before")
    @classmethod
    def _classifier_trees(cls, data: Any) -> Any:
        """Lay the given ``lightgbm`` keys (a config file's or a ``--set``) over the feature
        set's CLASSIFIER_TREES: naming one key changes that key only, never brings back the
        stacker's defaults for the others."""
        if not isinstance(data, dict) or not isinstance(data.get("lightgbm", {}), dict):
            return data
        feature_set = data.get("feature_set", cls.model_fields["feature_set"].default)
        trees = CLASSIFIER_TREES.get(feature_set, {})  # an unknown set: the field says so
        return {**data, "lightgbm": {**trees, **data.get("lightgbm", {})}}


# ---------------------------------------------------------------------------------------
# The Hugging Face transformer families (speechstack.models.pretrained)


class TransformerParams(Strict):
    """Where a transformer family's weights come from (subclassed by each family, which
    names its HF config class in ``hf_config``, so config keys are checked with the file)."""

    hf_config: ClassVar[str] = ""  # e.g. "Wav2Vec2Config", a class exported by transformers

    pretrained: str | None = None  # hub name or local folder (config.json + weights)
    config: dict[str, Any] | None = None  # HF config keys of a from-scratch model ({} = the
    #   HF defaults, i.e. the base-size architecture); only when `pretrained` is null
    config_overrides: dict[str, Any] = Field(default_factory=dict)  # applied to either
    #   (dropouts, layerdrop, SpecAugment-style masking); must not change the architecture
    #   of a checkpoint

    @model_validator(mode="after")
    def _one_source(self) -> TransformerParams:
        if self.pretrained is not None and self.config is not None:
            raise ValueError(
                "set either `pretrained` (a checkpoint) or `config` (train from scratch), not "
                "both: with a checkpoint, set config=null and put changes in config_overrides"
            )
        if self.pretrained is None and self.config is None:
            raise ValueError(
                "set `pretrained` (a hub name or local folder with the weights) or `config` "
                "(HF config keys of a from-scratch model, {} for the defaults)"
            )
        if self.hf_config:
            import transformers

            config_class = getattr(transformers, self.hf_config)
            check_config_keys(config_class, list(self.config or ()), "config")
            check_config_keys(config_class, list(self.config_overrides), "config_overrides")
        return self


def check_config_keys(
    config_class: type[PretrainedConfig], keys: Sequence[str], field_name: str
) -> None:
    """HF configs accept any keyword silently; a typo here would be a silent no-op, so every
    key must be an attribute the config class defines."""
    if not keys:
        return
    known = config_class()
    unknown = [key for key in keys if not hasattr(known, key)]
    if unknown:
        valid = sorted(k for k in known.to_dict() if not k.startswith("_"))
        raise ValueError(
            f"model.params.{field_name}: unknown {config_class.__name__} key(s) "
            f"{', '.join(map(repr, unknown))}; valid keys: {', '.join(valid)}"
        )


@MODEL_PARAMS.register("wav2vec2")
class Wav2Vec2Params(TransformerParams):
    hf_config: ClassVar[str] = "Wav2Vec2Config"

    freeze_feature_encoder: bool = True  # the convolutional waveform encoder is not trained
    freeze_layers: int = Field(0, ge=0)  # the first N transformer layers and what feeds them
    #   (feature projection, positional convolution, masking vector) are not trained
    weighted_layer_sum: bool = False  # classify a learned softmax mix of every hidden layer
    #   (embedding output + each transformer layer) instead of the last one
    normalize: bool = True  # zero mean, unit variance per clip (as wav2vec2-base expects)
    head: HeadName = "none"  # per-frame head before pooling: none, linear, cnn, lstm
    head_dim: int = Field(256, ge=1)  # output width of the head (unused for none)
    pooling: PoolingName = "mean"  # over valid frames: mean, sum, max, attention, mean_max
    dropout: float = Field(0.1, ge=0, lt=1)  # before the head and before the classifier


@MODEL_PARAMS.register("wav2vec2_ctc")
class Wav2Vec2CTCParams(TransformerParams):
    hf_config: ClassVar[str] = "Wav2Vec2Config"

    freeze_feature_encoder: bool = True  # the convolutional waveform encoder is not trained
    #   (what every wav2vec2 CTC fine-tuning does)
    normalize: bool = True  # zero mean, unit variance per clip (as wav2vec2 checkpoints expect)


@MODEL_PARAMS.register("whisper")
class WhisperParams(TransformerParams):
    hf_config: ClassVar[str] = "WhisperConfig"

    max_source_positions: int | None = Field(None, ge=1)  # encoder positions kept, 20 ms
    #   (2 log-mel frames) each; null = the model's own (1500 = 30 s for openai checkpoints).
    #   Fewer is proportionally faster: the positional table is cut to the first N
    freeze_encoder: bool = False  # train only the head (linear probing)
    freeze_layers: int = Field(0, ge=0)  # the conv stem and the first N transformer layers
    #   are not trained
    weighted_layer_sum: bool = False  # pool a learned softmax mix of every hidden layer
    head: HeadName = "linear"  # per-frame head: none, linear, cnn, lstm
    head_dim: int = Field(256, ge=1)  # output width of the head (unused for none)
    pooling: PoolingName = "mean"  # over the frames that hold the clip
    dropout: float = Field(0.1, ge=0, lt=1)  # before the head and before the classifier


@MODEL_PARAMS.register("whisper_seq2seq")
class WhisperSeq2SeqParams(TransformerParams):
    hf_config: ClassVar[str] = "WhisperConfig"

    max_source_positions: int | None = Field(None, ge=1)  # encoder positions kept, 20 ms
    #   (2 log-mel frames) each: the longest clip it hears is N / 50 s; null = the model's
    #   own (1500 = 30 s for openai checkpoints). Every clip is padded to it, so fewer is
    #   proportionally faster; a longer clip is an error, never cut
    freeze_encoder: bool = False  # train only the decoder (and the token embeddings)
    freeze_layers: int = Field(0, ge=0)  # the conv stem and the first N encoder layers are
    #   not trained
    tokenizer: Literal["characters", "whisper"] = "characters"  # what the decoder writes:
    #   characters: the run's character vocabulary (token embeddings resized to it);
    #   whisper: the checkpoint's own byte-level BPE tokenizer, loaded from the `pretrained`
    #   folder, its vocabulary and embeddings kept, transcripts after the prompt
    #   <|startoftranscript|><|language|><|task|><|notimestamps|>
    language: str | None = None  # tokenizer whisper: the language token of the prompt, a
    #   name or code ("bengali"/"bn", "french"/"fr"); null = no language token
    task: Literal["transcribe", "translate"] = "transcribe"  # tokenizer whisper: the task
    #   token of the prompt (translate: the transcripts are English translations)
    max_new_tokens: int | None = Field(None, ge=1)  # longest transcript generated, in tokens
    #   (characters, or BPE tokens); null = as many as the decoder's positions hold after
    #   the prompt (max_target_positions - 1, or - 4 with the whisper tokenizer's prompt)
    num_beams: int = Field(1, ge=1)  # 1 = greedy decoding; more = beam search (slower)
    length_penalty: float = 1.0  # beam search: a hypothesis's log-probability is divided by
    #   its length ** length_penalty (above 0 favours longer transcripts)
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # of the decoder's cross-entropy

    @model_validator(mode="after")
    def _whisper_tokenizer_settings(self) -> WhisperSeq2SeqParams:
        if self.tokenizer == "whisper" and self.pretrained is None:
            raise ValueError(
                "tokenizer=whisper uses the checkpoint's own tokenizer and embeddings: set "
                "`pretrained` (a hub name or a local folder with the weights and tokenizer "
                "files) and config=null"
            )
        if self.tokenizer == "characters" and (
            self.language is not None or self.task != "transcribe"
        ):
            raise ValueError(
                "`language` and `task` are tokens of Whisper's own prompt: they need "
                "tokenizer=whisper (with tokenizer=characters set language=null and "
                "task=transcribe)"
            )
        return self


@MODEL_PARAMS.register("ast")
class ASTParams(TransformerParams):
    hf_config: ClassVar[str] = "ASTConfig"

    window: WindowName = "hanning"  # fbank window; AST checkpoints were trained on hanning
    fbank_mean: float | None = None  # normalisation (fbank - mean) / (2 * std); null = the
    fbank_std: float | None = None  #   checkpoint folder's preprocessor_config.json, else
    #   the AudioSet statistics (-4.2677393, 4.5689974); speech-commands-v2: -6.845978, 5.5654526
    dither: float = Field(0.0, ge=0)  # training-only noise per fbank frame (waveform units)
    freeze_layers: int = Field(0, ge=0)  # patch/position embeddings and the first N
    #   transformer layers are not trained
    pooling: Literal["cls", "mean", "sum", "max", "attention", "mean_max"] = "cls"  # cls:
    #   the model's own head on the mean of its [CLS] and distillation tokens (what the
    #   checkpoints were fine-tuned with); others pool the patch tokens (PooledClassifier)
    dropout: float = Field(0.0, ge=0, lt=1)  # before the classifier of a patch pooling
