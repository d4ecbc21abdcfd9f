"""A Llama-style decoder: RMSNorm, RoPE, SwiGLU, no biases, untied embedding and head.

This is the model every trial trains. It follows the paper's setup (PAPER.md section 2: the Marin/Levanter
Llama) in the plain one-file style of nanoGPT's model.py.

Parameter names are a contract: the optimizers route parameters by role (see `param_role`), so renaming a
module here changes which rule each optimizer applies to it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# The configs, the presets and the parameter count live in workers/scales.py (no torch: the API and the
# catalog read them without importing torch); re-exported here, where the model is built from them.
from workers.scales import INITS as INITS
from workers.scales import LLAMA3_VOCAB as LLAMA3_VOCAB
from workers.scales import SCALES as SCALES
from workers.scales import ModelConfig as ModelConfig
from workers.scales import chinchilla_tokens as chinchilla_tokens
from workers.scales import get_scale as get_scale
from workers.scales import non_embedding_params as non_embedding_params


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rope_tables(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each (T, hs/2)."""
    hs = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs))
    t = torch.arange(config.seq_len, dtype=torch.float32)
    angles = torch.outer(t, inv_freq)  # (T, hs/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, nh, T, hs); rotate the two halves of each head (the "rotate_half" convention of Llama/HF)
    T = x.size(-2)
    c, s = cos[:T].to(x.dtype), sin[:T].to(x.dtype)  # (T, hs/2)
    x1, x2 = x.chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    return torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, d, bias=False)
        self.wv = nn.Linear(d, d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        nh, hs = self.n_heads, C // self.n_heads
        q = self.wq(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.wk(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.wv(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.wo(y)


class SwiGLU(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(config.d_model, config.d_ff, bias=False)  # gate
        self.w3 = nn.Linear(config.d_model, config.d_ff, bias=False)  # up
        self.w2 = nn.Linear(config.d_ff, config.d_model, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)  # untied (Llama)
        cos, sin = rope_tables(config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise every parameter by `config.init` ("levanter" or "gpt2")."""
        if self.config.init == "gpt2":
            init_gpt2_(self)
        else:
            init_levanter_(self)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) when targets is None, else the mean cross-entropy loss (a scalar)."""
        x = self.tok_emb(idx)  # (B, T, C)
        for block in self.blocks:
            x = block(x, self.rope_cos, self.rope_sin)
        logits = self.lm_head(self.norm_f(x))  # (B, T, V)
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


# Levanter's embedding scale: haliax `Embedding.init(..., initializer_range=0.02)` (haliax nn/embedding.py), which
# Levanter's `LlamaEmbedding.init` (levanter models/llama.py) calls without an initializer_range.
EMBEDDING_STD = 0.02
# haliax `Linear.init` draws a standard normal truncated to [-3, 3] (`hax.random.truncated_normal(key, ..., -3, 3)`).
TRUNCATION = 3.0


@torch.no_grad()
def init_levanter_(model: Transformer, init_scale: float = 1.0) -> None:
    """Levanter's Llama initialisation, as the paper's runs started.

    Sources (stanford-crfm/levanter src/levanter/models/llama.py; stanford-crfm/haliax src/haliax/nn/linear.py,
    src/haliax/nn/embedding.py):
    - every `hnn.Linear` (`LlamaAttention.init`: q/k/v/o_proj; `LlamaMlp.init`: gate/up/down_proj;
      `LlamaLMHeadModel.init`: lm_head) is made by haliax `Linear.init`: `truncated_normal(-3, 3) *
      (init_scale / sqrt(input_size))` with init_scale 1. So W = T / sqrt(fan_in), T a standard normal truncated
      to [-3, 3] (its std is 0.98658, not 1: the truncation's variance loss is not corrected), fan_in = the
      layer's input width (d for q/k/v/o, w1, w3 and the head; d_ff for w2). No residual 1/sqrt(2 L) scaling.
    - the token embedding: `LlamaEmbedding.init` calls haliax `Embedding.init`, whose weight is
      `normal * initializer_range` with its default 0.02: N(0, 0.02^2), not truncated.
    - RMSNorm gains: ones (`LlamaRMSNorm.init`: `hax.ones(axis)`).
    torch's Linear weight is (out, in), so fan_in is `weight.shape[1]`.
    """
    for name, p in model.named_parameters():
        role = param_role(name)
        if role == "norm":
            p.fill_(1.0)
        elif role == "embedding":
            p.normal_(0.0, EMBEDDING_STD)
        else:  # "matrix" and "head": every Linear
            nn.init.trunc_normal_(p, mean=0.0, std=1.0, a=-TRUNCATION, b=TRUNCATION)
            p.mul_(init_scale / math.sqrt(p.shape[1]))


@torch.no_grad()
def init_gpt2_(model: Transformer) -> None:
    """GPT-2/nanoGPT initialisation (nanoGPT model.py `_init_weights`): N(0, 0.02) everywhere, the residual output
    projections (wo, w2) scaled by 1/sqrt(2 x layers), norm gains ones. Kept for comparisons with the paper's."""
    std = 0.02
    for name, p in model.named_parameters():
        if p.ndim == 1:
            p.fill_(1.0)  # RMSNorm gains
        elif name.endswith(("attn.wo.weight", "mlp.w2.weight")):
            p.normal_(0.0, std / math.sqrt(2 * model.config.n_layers))
        else:
            p.normal_(0.0, std)


def build_model(config: ModelConfig, device: torch.device | str | None = None) -> Transformer:
    """A freshly initialised model (seed it with torch.manual_seed before calling for reproducibility)."""
    if device is None:
        return Transformer(config)
    with torch.device(device):
        return Transformer(config)


# The roles every optimizer routes by (OPTIMIZERS.md section 1: Levanter's decay mask and matrix routing).
ROLES = ("embedding", "head", "matrix", "norm")


def param_role(name: str) -> str:
    """The role of a parameter of `Transformer` by name: embedding, head, matrix (a 2-D hidden weight) or norm."""
    if name.startswith("tok_emb."):
        return "embedding"
    if name.startswith("lm_head."):
        return "head"
    if name.endswith("norm.weight") or name == "norm_f.weight":
        return "norm"
    if name.startswith("blocks.") and name.endswith(".weight"):
        return "matrix"
    raise ValueError(f"parameter {name!r} has no known role; update workers.model.param_role")
