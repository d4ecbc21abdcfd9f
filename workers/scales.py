"""The model configs and the scale presets, without torch: what a scale is (shape, family, init) and how many
non-embedding parameters and Chinchilla tokens it has. workers/model.py builds the model from these; the API,
the analysis and sweep_service.catalog read them without paying for importing torch (seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

INITS = ("levanter", "gpt2")


@dataclass(frozen=True)
class ModelConfig:
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    seq_len: int
    vocab_size: int = 256
    # "paper" scales use the paper's grids; "tiny" scales the CPU grids (see workers/optimizers/base.py).
    family: str = "tiny"
    rope_theta: float = 10000.0  # Llama's RoPE base
    norm_eps: float = 1e-5  # Llama's RMSNorm epsilon
    # Initialisation: "levanter" (the paper's: Levanter's Llama, see `init_levanter_`) or "gpt2" (nanoGPT's, for
    # comparisons; see `init_gpt2_`).
    init: str = "levanter"

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; valid: {', '.join(INITS)}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2 != 0:
            raise ValueError("RoPE needs an even head dimension")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


# PAPER.md section 2: 32 layers, sequence 4096, d_ff = 4d, Llama-3 tokenizer (128,256 tokens).
LLAMA3_VOCAB = 128256

SCALES: dict[str, ModelConfig] = {
    "130m": ModelConfig(512, 32, 8, 2048, 4096, LLAMA3_VOCAB, "paper"),
    "300m": ModelConfig(768, 32, 12, 3072, 4096, LLAMA3_VOCAB, "paper"),
    "520m": ModelConfig(1024, 32, 16, 4096, 4096, LLAMA3_VOCAB, "paper"),
    "1.2b": ModelConfig(1536, 32, 24, 6144, 4096, LLAMA3_VOCAB, "paper"),
    # The tiny ladder: same family (d_ff = 4d, head dim 32), byte vocabulary, 2 layers, sequence 128. Widths
    # 64/96/128/192 mirror the paper's 512/768/1024/1536, so counts are the paper's / 1024 (131k .. 1.18M,
    # a 9x span). tiny-130k reaches 1x Chinchilla (2.6M tokens) in about a minute on 2 CPU cores
    # (DESIGN.md calibration: ~54k tokens/s).
    "tiny-130k": ModelConfig(64, 2, 2, 256, 128, 256, "tiny"),
    "tiny-300k": ModelConfig(96, 2, 3, 384, 128, 256, "tiny"),
    "tiny-520k": ModelConfig(128, 2, 4, 512, 128, 256, "tiny"),
    "tiny-1.2m": ModelConfig(192, 2, 6, 768, 128, 256, "tiny"),
}


def get_scale(name: str) -> ModelConfig:
    """The preset called `name`; an unknown name raises a ValueError that lists the valid ones."""
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(f"unknown scale {name!r}; valid scales: {', '.join(SCALES)}") from None


def non_embedding_params(config: ModelConfig) -> int:
    """Non-embedding parameters as the paper counts them: N = layers x (3 d d_ff + 4 d^2).

    The attention (4 d^2) and SwiGLU (3 d d_ff) matrices of every block; the embedding, the head and the
    norm gains are not counted (PAPER.md section 2). Chinchilla tokens = multiple x 20 x N.
    """
    d = config.d_model
    return config.n_layers * (3 * d * config.d_ff + 4 * d * d)


def chinchilla_tokens(config: ModelConfig, multiple: float) -> int:
    return int(multiple * 20 * non_embedding_params(config))
