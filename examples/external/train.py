"""A standalone training script tuned by sweep-service through `sweep-service agent` (it imports nothing from it).

Plain PyTorch: a small MLP language model over a window of the previous tokens, trained with AdamW on a
synthetic corpus (a Markov chain over 64 tokens, fixed by a seed, so the script needs no files).
It speaks the agent's protocol only through its arguments and its stdout:

- the hyperparameters arrive as `--key=value` arguments (also as JSON in SWEEP_TRIAL_CONFIG); ones this
  script does not use are ignored;
- the scale, the Chinchilla multiple and the seed arrive in SWEEP_TRIAL_SCALE, SWEEP_TRIAL_CHINCHILLA and
  SWEEP_TRIAL_SEED (defaults below when run by hand);
- it prints `{"step": S, "loss": L}` at each evaluation and `{"final_loss": L}` at the end.

    python examples/external/train.py --lr=0.003 --wd=0.1      # by hand
"""

from __future__ import annotations

import argparse
import json
import math
import os

import torch
from torch import nn

VOCAB = 64
CONTEXT = 8  # tokens the model sees before each prediction
SEQ = 64  # positions predicted per sequence
EMBED = 32
# Our own scales: hidden width. Their non-embedding parameter counts (CONTEXT*EMBED*H + H*H, no biases) are
# what examples/external/spec.yaml gives as `custom_scales`.
SCALES = {"mlp-small": 64, "mlp-large": 128}


class WindowMLP(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.body = nn.Sequential(
            nn.Linear(CONTEXT * EMBED, hidden, bias=False),
            nn.GELU(),
            nn.Linear(hidden, hidden, bias=False),
            nn.GELU(),
        )
        self.head = nn.Linear(hidden, VOCAB, bias=False)

    def non_embedding_params(self) -> int:
        return sum(p.numel() for p in self.body.parameters())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens (B, CONTEXT + SEQ) -> logits (B, SEQ, VOCAB): output t predicts token t+CONTEXT from the CONTEXT
        # tokens before it.
        x = self.embed(tokens[:, :-1])  # (B, CONTEXT + SEQ - 1, EMBED)
        windows = x.unfold(1, CONTEXT, 1)  # (B, SEQ, EMBED, CONTEXT)
        windows = windows.transpose(2, 3).flatten(2)  # (B, SEQ, CONTEXT * EMBED)
        return self.head(self.body(windows))


def markov_chain(seed: int = 1234) -> torch.Tensor:
    """Next-token probabilities given the previous token: 4 likely successors each, the rest rare."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(VOCAB, VOCAB, generator=g) * 0.5
    top = torch.randint(0, VOCAB, (VOCAB, 4), generator=g)
    logits.scatter_(1, top, 4.0)
    return logits.softmax(-1)


def corpus(table: torch.Tensor, chains: int, length: int, g: torch.Generator) -> torch.Tensor:
    """`chains` independent walks of `length` tokens (sampled side by side: `length` sequential steps)."""
    out = torch.empty(chains, length, dtype=torch.long)
    out[:, 0] = torch.randint(0, VOCAB, (chains,), generator=g)
    for t in range(1, length):
        out[:, t] = torch.multinomial(table[out[:, t - 1]], 1, generator=g).squeeze(1)
    return out


def batch_of(stream: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n random windows of CONTEXT + SEQ tokens."""
    rows = torch.randint(0, stream.shape[0], (n,), generator=g)
    starts = torch.randint(0, stream.shape[1] - CONTEXT - SEQ + 1, (n,), generator=g)
    index = starts[:, None] + torch.arange(CONTEXT + SEQ)[None, :]
    return stream[rows[:, None], index]


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.98)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--warmup", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    args, _unused = p.parse_known_args()  # the service's other hyperparameters (e.g. decay) are not ours
    scale = os.environ.get("SWEEP_TRIAL_SCALE", "mlp-small")
    chinchilla = float(os.environ.get("SWEEP_TRIAL_CHINCHILLA", "1"))
    seed = int(os.environ.get("SWEEP_TRIAL_SEED", "0"))
    torch.set_num_threads(1)

    torch.manual_seed(seed)
    model = WindowMLP(SCALES[scale])
    # Chinchilla: tokens = multiple x 20 x non-embedding parameters; each step trains batch x SEQ tokens.
    steps = max(1, round(chinchilla * 20 * model.non_embedding_params() / (args.batch_size * SEQ)))
    decay = [p for n, p in model.named_parameters() if p.ndim == 2 and not n.startswith("embed")]
    other = [p for n, p in model.named_parameters() if not (p.ndim == 2 and not n.startswith("embed"))]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.wd}, {"params": other, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(args.beta1, args.beta2),
        eps=args.eps,
    )
    table = markov_chain()
    data_g = torch.Generator().manual_seed(seed)
    train = corpus(table, 256, 1024, torch.Generator().manual_seed(1))  # 262k tokens, the same for every trial
    val = corpus(table, 128, CONTEXT + SEQ, torch.Generator().manual_seed(2))  # the fixed validation set

    def evaluate() -> float:
        with torch.no_grad():
            logits = model(val)
            return float(nn.functional.cross_entropy(logits.reshape(-1, VOCAB), val[:, CONTEXT:].reshape(-1)))

    every = max(1, steps // 10)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, args.lr, args.warmup)
        batch = batch_of(train, args.batch_size, data_g)
        logits = model(batch)
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), batch[:, CONTEXT:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        opt.step()
        if (step + 1) % every == 0 and step + 1 < steps:
            print(json.dumps({"step": step + 1, "loss": evaluate()}), flush=True)
    print(json.dumps({"final_loss": evaluate()}), flush=True)


if __name__ == "__main__":
    main()
