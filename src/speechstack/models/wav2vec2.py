"""wav2vec 2.0 on the raw waveform: HF ``Wav2Vec2Model`` + pooled classification head
(``wav2vec2``), and HF ``Wav2Vec2ForCTC``, a speech recogniser over the run's characters
(``wav2vec2_ctc``, trained by ``transcribe.py``).

For real use, ``pretrained: facebook/wav2vec2-base`` (95M parameters, self-supervised on
LibriSpeech; a local folder when there is no hub access). A from-scratch ``config`` makes a
small model for offline demos and tests.
"""

from __future__ import annotations

import torch
from torch import nn

from speechstack.models import ModelContext, register_model
from speechstack.models.ctc import BLANK_ID, CTCModel
from speechstack.models.pooling import PooledClassifier
from speechstack.models.pretrained import (
    FrameHead,
    LayerWeightedSum,
    class_names,
    freeze,
    freeze_feature_encoder,
    freeze_first_layers,
    load_transformer,
    normalize_per_clip,
    require_checkpoint_rate,
    valid_mask,
)
from speechstack.params.models import Wav2Vec2CTCParams, Wav2Vec2Params


class Wav2Vec2Classifier(nn.Module):
    """Waveform ``(batch, samples)`` at 16 kHz -> per-clip normalised -> wav2vec2 frames
    ``(batch, frames, hidden)`` (20 ms per frame for the base conv stack) -> optional
    layer mix and frame head -> pooled -> logits ``(batch, num_classes)``."""

    def __init__(self, params: Wav2Vec2Params, context: ModelContext) -> None:
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        super().__init__()
        require_checkpoint_rate(params, context)
        self.backbone = load_transformer(
            Wav2Vec2Model, Wav2Vec2Config, params, class_names(context)
        )
        config = self.backbone.config
        self.skips_layers = config.layerdrop > 0  # DDP must then look for unused parameters
        self.normalize = params.normalize
        # Models with layer-norm feature encoders were trained with an attention mask over
        # padding; group-norm ones (wav2vec2-base) must not get one (HF's convention).
        self.pass_attention_mask = config.feat_extract_norm == "layer"
        self.layer_sum = (
            LayerWeightedSum(config.num_hidden_layers + 1) if params.weighted_layer_sum else None
        )
        self.head = FrameHead(params.head, config.hidden_size, params.head_dim, params.dropout)
        self.classifier = PooledClassifier(
            params.pooling, self.head.out_dim, context.num_classes, params.dropout
        )
        if params.freeze_feature_encoder:
            freeze_feature_encoder(self.backbone)
        if params.freeze_layers:
            freeze_first_layers(self.backbone.encoder.layers, params.freeze_layers)
            freeze(self.backbone.feature_projection)
            freeze(self.backbone.encoder.pos_conv_embed)
            if getattr(self.backbone, "masked_spec_embed", None) is not None:
                freeze(self.backbone.masked_spec_embed)
            # the encoder's layer norm feeds the first layer (post-norm models such as
            # wav2vec2-base) or follows the last (stable-layer-norm ones): frozen with them
            stable = config.do_stable_layer_norm
            if not stable or params.freeze_layers == config.num_hidden_layers:
                freeze(self.backbone.encoder.layer_norm)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``lengths``: optional ``(batch,)`` valid samples per clip (the rest is padding);
        ``None`` = every sample is audio (fixed-length clips, as the training loop feeds)."""
        sample_mask = valid_mask(lengths, waveform.shape[1])
        inputs = normalize_per_clip(waveform, lengths) if self.normalize else waveform.float()
        attention_mask = (
            sample_mask.long() if sample_mask is not None and self.pass_attention_mask else None
        )
        outputs = self.backbone(
            inputs,
            attention_mask=attention_mask,
            output_hidden_states=self.layer_sum is not None,
        )
        if self.layer_sum is not None:
            hidden = self.layer_sum(outputs.hidden_states)
        else:
            hidden = outputs.last_hidden_state  # (batch, frames, hidden)
        frame_mask = None
        if lengths is not None:
            frame_lengths = self.backbone._get_feat_extract_output_lengths(lengths)
            frame_mask = valid_mask(frame_lengths, hidden.shape[1])
        return self.classifier(self.head(hidden, frame_mask), frame_mask)


TINY_CONFIG = {  # ~25k parameters, 200 frames per second
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [16, 16, 16],
    "conv_kernel": [10, 8, 4],
    "conv_stride": [5, 4, 4],
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "mask_time_prob": 0.0,
    "layerdrop": 0.0,
}


@register_model(
    "wav2vec2",
    Wav2Vec2Params,
    tiny={"config": TINY_CONFIG, "freeze_feature_encoder": False, "dropout": 0.0},
)
def build_wav2vec2(params: Wav2Vec2Params, context: ModelContext) -> nn.Module:
    return Wav2Vec2Classifier(params, context)


class Wav2Vec2CTC(CTCModel):
    """Waveform ``(batch, samples)`` at 16 kHz -> per-clip normalised -> HF
    ``Wav2Vec2ForCTC`` -> per-frame logits ``(batch, frames, tokens)`` over the run's
    vocabulary (its size and blank set here: a checkpoint's own CTC head is replaced when
    its vocabulary differs). wav2vec2's SpecAugment-style masking of latent frames runs in
    training when the config's ``mask_time_prob`` (``config_overrides``) is above zero."""

    def __init__(self, params: Wav2Vec2CTCParams, context: ModelContext) -> None:
        from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

        super().__init__()
        require_checkpoint_rate(params, context)
        self.backbone = load_transformer(
            Wav2Vec2ForCTC,
            Wav2Vec2Config,
            params,
            None,
            has_head=True,
            settings={"vocab_size": context.num_classes, "pad_token_id": BLANK_ID},
        )
        self.normalize = params.normalize
        self.pass_attention_mask = self.backbone.config.feat_extract_norm == "layer"
        if params.freeze_feature_encoder:
            freeze_feature_encoder(self.backbone)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        sample_mask = valid_mask(lengths, waveform.shape[1])
        inputs = normalize_per_clip(waveform, lengths) if self.normalize else waveform.float()
        attention_mask = (
            sample_mask.long() if sample_mask is not None and self.pass_attention_mask else None
        )
        return self.backbone(inputs, attention_mask=attention_mask).logits

    def output_lengths(self, samples: torch.Tensor) -> torch.Tensor:
        return self.backbone._get_feat_extract_output_lengths(samples).long()


@register_model(
    "wav2vec2_ctc",
    Wav2Vec2CTCParams,
    tiny={"config": TINY_CONFIG, "freeze_feature_encoder": False},
    trainer="transcriber",
)
def build_wav2vec2_ctc(params: Wav2Vec2CTCParams, context: ModelContext) -> nn.Module:
    return Wav2Vec2CTC(params, context)
