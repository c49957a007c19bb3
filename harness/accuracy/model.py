"""The encoder classifier trained on every task, with any registered torch attention as its core.

token embedding + learned positional embedding -> N pre-norm blocks of
(LayerNorm, attention, dropout, residual; LayerNorm, FFN with GELU, dropout, residual) ->
final LayerNorm -> mean pooling over real tokens (or a learned CLS vector) ->
Dense + GELU -> classifier. Retrieval: one shared encoder for both documents (two towers with
tied weights), pair features [x1, x2, x1 * x2, x1 - x2] -> Dense + GELU -> classifier.

The attention core receives projected q, k, v of shape (B, H, T, D) and the key-padding mask
(B, T, True = keep) and returns (B, H, T, D); projections in and out are ours.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from harness.accuracy.training_presets import ModelConfig

AttentionCore = Callable[..., torch.Tensor]


class AttentionLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, core: AttentionCore, use_mask: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.core = core
        self.use_mask = use_mask

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        batch, seq_len, width = x.shape
        q, k, v = self.qkv(x).view(batch, seq_len, 3, self.heads, width // self.heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        mask = keep if self.use_mask else None
        attended = self.core(q, k, v, causal=False, key_padding_mask=mask)
        return self.out(attended.transpose(1, 2).reshape(batch, seq_len, width))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, core: AttentionCore, use_mask: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.attention = AttentionLayer(config.d_model, config.heads, core, use_mask)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.ffn = nn.Sequential(nn.Linear(config.d_model, config.ffn_dim), nn.GELU(),
                                 nn.Dropout(config.dropout), nn.Linear(config.ffn_dim,
                                                                       config.d_model))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm1(x), keep))
        return x + self.dropout(self.ffn(self.norm2(x)))


class Encoder(nn.Module):
    """Tokens (B, T) -> pooled representation (B, d_model)."""

    def __init__(self, config: ModelConfig, vocab_size: int, seq_len: int, core: AttentionCore,
                 pad_id: int | None) -> None:
        super().__init__()
        self.config = config
        self.pad_id = pad_id
        cls = config.pooling == "cls"
        self.embed = nn.Embedding(vocab_size, config.d_model)
        self.position = nn.Parameter(torch.zeros(seq_len + cls, config.d_model))
        nn.init.normal_(self.position, std=0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, config.d_model)) if cls else None
        self.dropout = nn.Dropout(config.dropout)
        use_mask = pad_id is not None
        self.blocks = nn.ModuleList(Block(config, core, use_mask) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        batch, seq_len = tokens.shape
        x = self.embed(tokens)
        keep = torch.arange(seq_len, device=tokens.device)[None, :] < lengths[:, None]
        if self.cls is not None:
            x = torch.cat([self.cls.expand(batch, -1, -1), x], dim=1)
            keep = torch.cat([keep.new_ones(batch, 1), keep], dim=1)
        x = self.dropout(x + self.position[:x.shape[1]])
        mask = keep if self.pad_id is not None else None
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        if self.cls is not None:
            return x[:, 0]
        return masked_mean(x, keep)


def masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over the kept tokens of each row: (B, T, C), (B, T) -> (B, C)."""
    weights = keep.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def head(in_features: int, hidden: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, num_classes))


class Classifier(nn.Module):
    """Single-sequence classifier: (tokens, lengths) -> logits."""

    def __init__(self, config: ModelConfig, *, vocab_size: int, seq_len: int, num_classes: int,
                 core: AttentionCore, pad_id: int | None) -> None:
        super().__init__()
        self.encoder = Encoder(config, vocab_size, seq_len, core, pad_id)
        self.head = head(config.d_model, config.head_dim_hidden or config.d_model, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(tokens, lengths))


class PairClassifier(nn.Module):
    """Two towers with tied weights; pair features [x1, x2, x1 * x2, x1 - x2]."""

    def __init__(self, config: ModelConfig, *, vocab_size: int, seq_len: int, num_classes: int,
                 core: AttentionCore, pad_id: int | None) -> None:
        super().__init__()
        self.encoder = Encoder(config, vocab_size, seq_len, core, pad_id)
        self.head = head(4 * config.d_model, config.head_dim_hidden or config.d_model,
                         num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, tokens2: torch.Tensor,
                lengths2: torch.Tensor) -> torch.Tensor:
        x1 = self.encoder(tokens, lengths)
        x2 = self.encoder(tokens2, lengths2)
        return self.head(pair_features(x1, x2))


def pair_features(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    return torch.cat([x1, x2, x1 * x2, x1 - x2], dim=-1)


def build(config: ModelConfig, *, vocab_size: int, seq_len: int, num_classes: int,
          core: AttentionCore, pad_id: int | None, pair: bool) -> nn.Module:
    cls = PairClassifier if pair else Classifier
    return cls(config, vocab_size=vocab_size, seq_len=seq_len, num_classes=num_classes,
               core=core, pad_id=pad_id)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
