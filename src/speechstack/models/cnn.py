"""A timm image backbone on log-mel: ``in_chans=1``, the spectrogram as a one-channel image."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from speechstack.features import LogMelFrontEnd
from speechstack.models import ModelContext, register_model
from speechstack.params.models import CNNParams


class LogMelCNN(nn.Module):
    """Waveform ``(batch, samples)`` -> log-mel ``(batch, 1, n_mels, frames)`` -> timm
    backbone -> logits ``(batch, num_classes)``."""

    def __init__(self, params: CNNParams, context: ModelContext) -> None:
        super().__init__()
        self.front_end = LogMelFrontEnd(
            context.features, context.audio.sample_rate, context.spec_augment
        )
        import timm  # here, not at import: config validation needs only the schema

        overlay = {"file": str(params.weights_file)} if params.weights_file else None
        if params.backbone not in timm.list_models():
            raise ValueError(
                f"unknown timm backbone '{params.backbone}' (model.params.backbone); "
                "see timm.list_models()"
            )
        try:
            self.backbone = timm.create_model(
                params.backbone,
                pretrained=params.pretrained,
                pretrained_cfg_overlay=overlay,
                in_chans=1,
                num_classes=context.num_classes,
                drop_rate=params.drop_rate,
                drop_path_rate=params.drop_path_rate or None,
                **_tuples(params.backbone_args),
            )
        except (OSError, RuntimeError) as error:
            if not params.pretrained:
                raise
            raise RuntimeError(
                f"could not load pretrained weights for timm '{params.backbone}': {error}\n"
                "Without hub access, download the checkpoint elsewhere and set "
                "model.params.weights_file=/path/to/model.safetensors (or set "
                "model.params.pretrained=false to train from scratch)."
            ) from error

        # channels-last (NHWC) weights and activations: oneDNN's and cuDNN's fast
        # convolution layout (faster training of the default CNN on CPU: README, Models)
        self.backbone = self.backbone.to(memory_format=torch.channels_last)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        image = self.front_end(waveform).unsqueeze(1)
        return self.backbone(image.contiguous(memory_format=torch.channels_last))


def _tuples(arguments: dict[str, Any]) -> dict[str, Any]:
    """YAML has no tuples; timm constructors compare some arguments (channels) as tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in arguments.items()}


@register_model("cnn", CNNParams, tiny={"backbone": "test_efficientnet", "drop_rate": 0.0})
def build_cnn(params: CNNParams, context: ModelContext) -> nn.Module:
    return LogMelCNN(params, context)
