"""BERT: an encoder-only Transformer with its two pretraining heads, weight-compatible with BERT (chapter 07).

Read top to bottom:

1. :class:`BertConfig`: the numbers that define the model;
2. :class:`EncoderBlock`: a post-norm block whose attention has **no causal mask**: every position sees
   every other one, x = norm(x + attn(x)), then x = norm(x + mlp(x));
3. :class:`BertEncoder`: token + position + segment embeddings (then a LayerNorm), the blocks, and the
   *pooler* (a tanh layer on the first position, the ``[CLS]`` token);
4. :class:`BertForPreTraining`: the encoder with the masked-language-model head (one score per vocabulary
   entry at every position, its output matrix tied to the token embedding) and the next-sentence head (two
   scores from the pooled ``[CLS]`` vector);
5. ``from_hf``: copy the weights of a ``transformers`` ``BertModel`` / ``BertForPreTraining``.

The parts are chapter 05's :class:`~llmcourse.transformer.attention.MultiHeadAttention` (with biases) and
chapter 06's LayerNorm and :class:`~llmcourse.transformer.feedforward.FeedForward` (exact GELU).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from llmcourse.models.generation import check_ids
from llmcourse.models.gpt import FusedLayerNorm
from llmcourse.transformer.attention import MultiHeadAttention
from llmcourse.transformer.feedforward import FeedForward


@dataclass
class BertConfig:
    """BERT's shape. The defaults are BERT-base (110 M parameters); ``d_hidden`` defaults to 4 * d_model."""

    vocab_size: int = 30522
    context_length: int = 512
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    d_hidden: int | None = None
    n_segments: int = 2
    eps: float = 1e-12
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.d_hidden is None:
            self.d_hidden = 4 * self.d_model


class EncoderBlock(nn.Module):
    """Post-norm, bidirectional: ``x = ln_1(x + attn(x))``, then ``x = ln_2(x + mlp(x))``."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attn = MultiHeadAttention(config.d_model, config.n_heads, bias=True, dropout=config.dropout)
        self.ln_1 = FusedLayerNorm(config.d_model, eps=config.eps)
        self.mlp = FeedForward(config.d_model, config.d_hidden, activation="gelu", dropout=config.dropout)
        self.ln_2 = FusedLayerNorm(config.d_model, eps=config.eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (batch, seq, d_model); ``mask`` (batch, 1, 1, seq) bool, True = a real token that may be attended to."""
        x = self.ln_1(x + self.dropout(self.attn(x, mask=mask)))   # is_causal is never set: both directions
        return self.ln_2(x + self.mlp(x))


class BertEncoder(nn.Module):
    """Token ids (batch, seq) -> hidden states (batch, seq, d_model) and the pooled ``[CLS]`` vector (batch, d_model)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = nn.Embedding(config.context_length, config.d_model)
        self.wse = nn.Embedding(config.n_segments, config.d_model)   # segment A = 0, segment B = 1
        self.ln_emb = FusedLayerNorm(config.d_model, eps=config.eps)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.n_layers))
        self.pooler = nn.Linear(config.d_model, config.d_model)
        self.apply(init_bert_weights)

    def forward(self, ids: Tensor, segments: Tensor | None = None,
                attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``segments``: 0/1 per token (default all 0); ``attention_mask``: 1 for real tokens, 0 for padding."""
        check_ids(ids, self.config.vocab_size, self.config.context_length)
        segments = torch.zeros_like(ids) if segments is None else segments
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.dropout(self.ln_emb(self.wte(ids) + self.wpe(positions) + self.wse(segments)))
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask)
        return x, torch.tanh(self.pooler(x[:, 0]))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_hf(cls, hf_model: nn.Module) -> "BertEncoder":
        """A BertEncoder with the weights of a ``transformers`` ``BertModel`` (or a model that has ``.bert``)."""
        model = cls(config_from_hf(hf_model.config))
        copy_encoder_from_hf(model, getattr(hf_model, "bert", hf_model))
        return model


class BertForPreTraining(nn.Module):
    """The encoder with BERT's two pretraining heads.

    * ``mlm``: dense -> GELU -> LayerNorm, then the tied token embedding (plus a bias) gives a score for every
      vocabulary entry at every position; only the masked positions are scored in training;
    * ``nsp``: a linear layer from the pooled ``[CLS]`` vector to two scores, "B follows A" (0) or "B is random" (1).
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertEncoder(config)
        self.mlm_dense = nn.Linear(config.d_model, config.d_model)
        self.mlm_ln = FusedLayerNorm(config.d_model, eps=config.eps)
        self.mlm_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.nsp = nn.Linear(config.d_model, 2)
        self.apply(init_bert_weights)

    def forward(self, ids: Tensor, segments: Tensor | None = None, attention_mask: Tensor | None = None,
                mlm_positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(mlm_logits (batch, seq, vocab), nsp_logits (batch, 2)).

        ``mlm_positions`` (bool, like ids): score only those positions, giving mlm_logits (n_positions, vocab);
        training needs no others, and the output layer is the largest matrix product of the model.
        """
        hidden, pooled = self.bert(ids, segments, attention_mask)
        if mlm_positions is not None:
            hidden = hidden[mlm_positions]
        h = self.mlm_ln(nn.functional.gelu(self.mlm_dense(hidden)))
        return h @ self.bert.wte.weight.t() + self.mlm_bias, self.nsp(pooled)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_hf(cls, hf_model: nn.Module) -> "BertForPreTraining":
        """A BertForPreTraining with the weights of ``transformers``' ``BertForPreTraining``."""
        model = cls(config_from_hf(hf_model.config))
        copy_encoder_from_hf(model.bert, hf_model.bert)
        heads = hf_model.cls
        with torch.no_grad():
            _copy_linear(model.mlm_dense, heads.predictions.transform.dense)
            _copy_norm(model.mlm_ln, heads.predictions.transform.LayerNorm)
            model.mlm_bias.copy_(heads.predictions.bias)
            _copy_linear(model.nsp, heads.seq_relationship)
        return model


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation: matrices and tables from N(0, 0.02^2), biases 0 (norms keep weight 1, bias 0)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def config_from_hf(cfg) -> BertConfig:
    """Our :class:`BertConfig` for a ``transformers.BertConfig`` (exact GELU, absolute positions only)."""
    if cfg.hidden_act != "gelu" or getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"only hidden_act='gelu' with absolute positions is supported, got {cfg.hidden_act!r}")
    return BertConfig(vocab_size=cfg.vocab_size, context_length=cfg.max_position_embeddings, d_model=cfg.hidden_size,
                      n_layers=cfg.num_hidden_layers, n_heads=cfg.num_attention_heads,
                      d_hidden=cfg.intermediate_size, n_segments=cfg.type_vocab_size, eps=cfg.layer_norm_eps)


def _copy_linear(ours: nn.Linear, theirs: nn.Linear) -> None:
    ours.weight.copy_(theirs.weight)
    ours.bias.copy_(theirs.bias)


def _copy_norm(ours: nn.Module, theirs: nn.LayerNorm) -> None:
    ours.weight.copy_(theirs.weight)
    ours.bias.copy_(theirs.bias)


def copy_encoder_from_hf(model: BertEncoder, hf: nn.Module) -> None:
    """Copy a ``transformers`` ``BertModel``'s weights into ``model`` (BERT names q, k, v query, key, value)."""
    with torch.no_grad():
        emb = hf.embeddings
        model.wte.weight.copy_(emb.word_embeddings.weight)
        model.wpe.weight.copy_(emb.position_embeddings.weight)
        model.wse.weight.copy_(emb.token_type_embeddings.weight)
        _copy_norm(model.ln_emb, emb.LayerNorm)
        for block, layer in zip(model.blocks, hf.encoder.layer):
            attn = layer.attention
            for ours, theirs in [(block.attn.q_proj, attn.self.query), (block.attn.k_proj, attn.self.key),
                                 (block.attn.v_proj, attn.self.value), (block.attn.o_proj, attn.output.dense),
                                 (block.mlp.up, layer.intermediate.dense), (block.mlp.down, layer.output.dense)]:
                _copy_linear(ours, theirs)
            _copy_norm(block.ln_1, attn.output.LayerNorm)
            _copy_norm(block.ln_2, layer.output.LayerNorm)
        _copy_linear(model.pooler, hf.pooler.dense)


__all__ = ["BertConfig", "BertEncoder", "BertForPreTraining", "EncoderBlock", "config_from_hf", "init_bert_weights",
           "copy_encoder_from_hf"]
