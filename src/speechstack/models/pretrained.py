"""What the Hugging Face transformer families share: one loader, freezing, heads.

``load_transformer`` is the only place a ``transformers`` model is built. Params name either
``pretrained`` (a hub name such as ``facebook/wav2vec2-base``, or a local folder holding
``config.json`` + weights) or ``config`` (the keys of the model's HF config, to train from
scratch), never both; ``config_overrides`` adjusts either (dropouts, masking, layerdrop):
``TransformerParams``, in ``speechstack.params.models`` with every family's schema.
This machine may have no hub access: a failed load raises ``PretrainedLoadError`` saying how
to put the weights in a local folder.

Shared modules over encoder frames ``(batch, frames, dim)`` with a boolean ``(batch, frames)``
mask of valid frames (``None`` = all valid):

* ``LayerWeightedSum`` mixes every hidden layer with learned softmax weights (SUPERB-style);
* ``FrameHead`` is an optional per-frame head (``linear``, ``cnn`` or ``lstm``) before pooling;
  pooling and the classifier are ``pooling.PooledClassifier``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from speechstack.models import ModelContext
from speechstack.params.models import HeadName, TransformerParams

if TYPE_CHECKING:  # transformers' modelling code takes seconds to import: only when building
    from transformers import PretrainedConfig, PreTrainedModel

Model = TypeVar("Model", bound="PreTrainedModel")

CHECKPOINT_SAMPLE_RATE = 16000  # Hz; wav2vec2, AST and Whisper checkpoints are all 16 kHz


class PretrainedLoadError(RuntimeError):
    """A checkpoint named by ``model.params.pretrained`` could not be loaded."""


def class_names(context: ModelContext) -> list[str]:
    """The task's class names when the context carries them, else ``"0" .. "n-1"``; they
    become the HF config's ``id2label``/``label2id``."""
    names = context.class_names
    if not names:
        return [str(index) for index in range(context.num_classes)]
    if len(names) != context.num_classes:
        raise ValueError(f"{len(names)} class names for {context.num_classes} classes")
    return [str(name) for name in names]


def label_arguments(names: Sequence[str]) -> dict[str, Any]:
    return {  # num_labels follows from id2label (passing both makes HF warn)
        "id2label": dict(enumerate(names)),
        "label2id": {name: index for index, name in enumerate(names)},
    }


def how_to_provide_weights(model_class: type[PreTrainedModel]) -> str:
    example = _example_checkpoint(model_class)
    folder = f"weights/{example.split('/')[-1]}"
    return (
        "This machine may have no access to the Hugging Face hub, and nothing is downloaded "
        "at run time: put the checkpoint in a local folder. For example, on a machine with "
        f"internet:\n  hf download {example} --local-dir {folder}\n"
        f"(older huggingface_hub: huggingface-cli download {example} --local-dir {folder}), "
        f"or in Python:\n  {model_class.__name__}.from_pretrained('{example}')"
        f".save_pretrained('{folder}')\n"
        f"then copy the folder here and set model.params.pretrained={folder} "
        "(or set pretrained=null and give a `config` to train from scratch)."
    )


def load_transformer(
    model_class: type[Model],
    config_class: type[PretrainedConfig],
    params: TransformerParams,
    names: Sequence[str] | None,
    *,
    has_head: bool = False,
    settings: dict[str, Any] | None = None,
) -> Model:
    """Build ``model_class`` from ``params.pretrained`` or from ``params.config``.

    ``names`` (the class names) set ``num_labels``/``id2label``/``label2id`` on the config
    (``None``: a model without class labels, such as a recogniser); ``settings`` are config
    keys the family itself decides (a CTC head's vocabulary size), over the user's; with
    ``has_head`` the checkpoint's output layer is replaced when its size differs
    (``ignore_mismatched_sizes``), so a checkpoint fine-tuned on other labels or another
    vocabulary loads.
    """
    labels = {**(label_arguments(names) if names is not None else {}), **(settings or {})}
    if params.pretrained is None:
        assert params.config is not None  # TransformerParams guarantees one source
        config = config_class(**{**params.config, **params.config_overrides, **labels})
        return model_class(config)
    source = local_path(params.pretrained)
    if _looks_local(params.pretrained) and not Path(source).is_dir():
        raise PretrainedLoadError(
            f"model.params.pretrained='{params.pretrained}' is not a folder.\n"
            + how_to_provide_weights(model_class)
        )
    try:
        return model_class.from_pretrained(
            source,
            dtype=torch.float32,  # trainable weights in float32 (autocast does the rest)
            **params.config_overrides,
            **labels,
            **({"ignore_mismatched_sizes": True} if has_head else {}),
        )
    except (OSError, ValueError) as error:  # missing folder/files, hub unreachable, bad id
        raise PretrainedLoadError(
            f"could not load model.params.pretrained='{params.pretrained}' as "
            f"{model_class.__name__}: {error}\n"
            f"'{params.pretrained}' is not a local folder here, and the hub did not provide it.\n"
            + how_to_provide_weights(model_class)
        ) from error


def local_path(name: str) -> str:
    """``name`` with ``~`` expanded when that is an existing folder, else unchanged."""
    expanded = Path(name).expanduser()
    return str(expanded) if expanded.is_dir() else name


def _looks_local(name: str) -> bool:
    """A path rather than a hub id (``org/name``): absolute, relative to ``.``/``~``, or
    with more than one separator."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


EXAMPLE_CHECKPOINTS = {  # named in the help text of a failed load
    "Wav2Vec2": "facebook/wav2vec2-base",
    "AST": "MIT/ast-finetuned-speech-commands-v2",
    "Whisper": "openai/whisper-base",
}


def _example_checkpoint(model_class: type[PreTrainedModel]) -> str:
    for prefix, name in EXAMPLE_CHECKPOINTS.items():
        if model_class.__name__.startswith(prefix):
            return name
    return "<hub name>"


def read_preprocessor_config(pretrained: str | None) -> dict[str, Any]:
    """The checkpoint's ``preprocessor_config.json`` (feature settings such as AST's fbank
    mean/std) from its folder or the hub cache, else ``{}``."""
    if pretrained is None:
        return {}
    from transformers.utils import cached_file

    found = cached_file(
        local_path(pretrained),
        "preprocessor_config.json",
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    if found is None:
        return {}
    path = Path(found)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from error


def require_checkpoint_rate(params: TransformerParams, context: ModelContext) -> None:
    if params.pretrained is not None and context.audio.sample_rate != CHECKPOINT_SAMPLE_RATE:
        raise ValueError(
            f"pretrained checkpoints expect {CHECKPOINT_SAMPLE_RATE} Hz audio; "
            f"audio.sample_rate is {context.audio.sample_rate}"
        )


# ---------------------------------------------------------------------------------------
# Freezing


def freeze(module: nn.Module | nn.Parameter) -> None:
    """Stop training ``module`` (its parameters get ``requires_grad=False``)."""
    module.requires_grad_(False)


def freeze_feature_encoder(model: nn.Module) -> None:
    """Freeze a model's convolutional waveform encoder through its own method, when it has
    one (wav2vec2-like models); fail loudly otherwise."""
    method = getattr(model, "freeze_feature_encoder", None)
    if not callable(method):
        raise ValueError(
            f"{type(model).__name__} has no feature encoder to freeze "
            "(model.params.freeze_feature_encoder)"
        )
    method()


def freeze_first_layers(layers: nn.ModuleList, count: int) -> None:
    """Freeze ``layers[:count]`` (``model.params.freeze_layers``)."""
    if count > len(layers):
        raise ValueError(
            f"model.params.freeze_layers={count} but the encoder has {len(layers)} layers"
        )
    for layer in layers[:count]:
        freeze(layer)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layer list of an HF encoder, wherever the architecture keeps it."""
    for path in ("layers", "encoder.layers", "encoder.layer"):
        module: Any = model
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"{type(model).__name__} has no transformer layer list to freeze")


# ---------------------------------------------------------------------------------------
# Shared modules


class LayerWeightedSum(nn.Module):
    """``num_layers`` hidden states, each ``(batch, frames, dim)`` -> their weighted sum
    ``(batch, frames, dim)``; the weights are a learned softmax (equal at initialisation)."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))

    def forward(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(hidden_states) != self.weights.numel():
            raise ValueError(
                f"expected {self.weights.numel()} hidden states, got {len(hidden_states)}"
            )
        stacked = torch.stack(tuple(hidden_states), dim=0)  # (layers, batch, frames, dim)
        weights = torch.softmax(self.weights.float(), dim=0).to(stacked.dtype)
        return (weights.view(-1, 1, 1, 1) * stacked).sum(dim=0)


class FrameHead(nn.Module):
    """Per-frame head over encoder output: ``(batch, frames, in_dim)`` -> ``(batch, frames,
    out_dim)``. Padded frames (``mask`` false) are zeroed first so they cannot leak in.

    * ``none``: identity (``out_dim = in_dim``);
    * ``linear``: linear projection + GELU (HF's ``classifier_proj_size`` projector);
    * ``cnn``: two 1-D convolutions over time (kernel 3, GELU), residual after the first;
    * ``lstm``: one bidirectional LSTM layer (``out_dim // 2`` per direction) over the valid
      frames only (packed sequences).
    """

    def __init__(self, kind: HeadName, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if kind not in ("none", "linear", "cnn", "lstm"):
            raise ValueError(f"unknown head '{kind}'; known: none, linear, cnn, lstm")
        if kind == "lstm" and out_dim % 2:
            raise ValueError(f"head=lstm needs an even head_dim (two directions), got {out_dim}")
        self.kind = kind
        self.out_dim = in_dim if kind == "none" else out_dim
        self.dropout = nn.Dropout(dropout)
        if kind == "linear":
            self.linear = nn.Linear(in_dim, out_dim)
        elif kind == "cnn":
            self.conv_in = nn.Conv1d(in_dim, out_dim, kernel_size=3, padding=1)
            self.conv_out = nn.Conv1d(out_dim, out_dim, kernel_size=3, padding=1)
        elif kind == "lstm":
            self.lstm = nn.LSTM(in_dim, out_dim // 2, batch_first=True, bidirectional=True)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "none":
            return frames
        if mask is not None:
            frames = frames * mask.unsqueeze(-1).to(frames.dtype)
        frames = self.dropout(frames)
        if self.kind == "linear":
            return nn.functional.gelu(self.linear(frames))
        if self.kind == "cnn":
            hidden = nn.functional.gelu(self.conv_in(frames.transpose(1, 2)))
            if mask is not None:
                hidden = hidden * mask.unsqueeze(1).to(hidden.dtype)
            hidden = hidden + nn.functional.gelu(self.conv_out(hidden))
            return hidden.transpose(1, 2)
        if mask is None:
            return self.lstm(frames)[0]
        lengths = mask.sum(dim=1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            frames, lengths, batch_first=True, enforce_sorted=False
        )
        output, _ = self.lstm(packed)
        output, _ = nn.utils.rnn.pad_packed_sequence(
            output, batch_first=True, total_length=frames.shape[1]
        )
        return output


def valid_mask(lengths: torch.Tensor | None, frames: int) -> torch.Tensor | None:
    """``(batch,)`` valid frame counts -> ``(batch, frames)`` boolean mask (``None`` stays
    ``None``: every frame valid)."""
    if lengths is None:
        return None
    return torch.arange(frames, device=lengths.device) < lengths.unsqueeze(1)


def normalize_per_clip(
    waveform: torch.Tensor, lengths: torch.Tensor | None = None, eps: float = 1e-7
) -> torch.Tensor:
    """Zero mean, unit variance per clip over its valid samples, padding left at zero, in
    float32 — what ``Wav2Vec2FeatureExtractor(do_normalize=True)`` does in numpy.

    ``waveform``: ``(batch, samples)``; ``lengths``: ``(batch,)`` valid samples or ``None``.
    """
    waveform = waveform.float()
    mask = valid_mask(lengths, waveform.shape[1])
    if mask is None:
        mean = waveform.mean(dim=1, keepdim=True)
        variance = waveform.var(dim=1, unbiased=False, keepdim=True)
        return (waveform - mean) / torch.sqrt(variance + eps)
    weights = mask.float()
    count = weights.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean = (waveform * weights).sum(dim=1, keepdim=True) / count
    variance = ((waveform - mean).square() * weights).sum(dim=1, keepdim=True) / count
    return (waveform - mean) / torch.sqrt(variance + eps) * weights


def ceil_div(numerator: torch.Tensor | int, denominator: int) -> Any:
    if isinstance(numerator, int):
        return math.ceil(numerator / denominator)
    return torch.div(numerator + denominator - 1, denominator, rounding_mode="floor")
