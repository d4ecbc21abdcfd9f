"""A deterministic objective for external-sweep tests: loss as a function of the config, no training.

Shared by the in-process reference (a plain function) and by the command `sweep-service agent` runs (this file
as a script: it prints the curve and the final loss as JSON lines, as a training script would).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

SPEC: dict[str, Any] = {
    "name": "external objective",
    "optimizers": ["adamw"],
    "scales": ["tiny-130k"],
    "chinchilla": [1],
    "search": {"adamw": {"tune": ["lr", "wd"], "grid": {"lr": [0.003, 0.006, 0.012, 0.024], "wd": [0.0, 0.1, 0.2]}}},
    "budget": 30,
    "seeds": [0, 1],
    "executor": "external",
}


def loss(config: dict[str, Any], seed: int) -> float:
    """A bowl in (log lr, wd) with its minimum at lr 0.012, wd 0.2, and a small seed offset."""
    return 2.0 + math.log2(float(config["lr"]) / 0.012) ** 2 * 0.01 + (float(config["wd"]) - 0.2) ** 2 + seed * 1e-4


if __name__ == "__main__":
    config = json.loads(os.environ["SWEEP_TRIAL_CONFIG"])
    seed = int(os.environ["SWEEP_TRIAL_SEED"])
    # The test's hook to keep one trial running (the agent running it is then killed).
    hang = os.environ.get("OBJECTIVE_HANG_FILE")
    if hang and not os.path.exists(hang):
        with open(hang, "w") as f:
            f.write(str(os.getpid()))  # the test ends this process (an orphan once its agent is killed)
        time.sleep(600)
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
    assert float(args["lr"]) == float(config["lr"]), (args, config)
    value = loss(config, seed)
    for step in (1, 2, 3):
        print(json.dumps({"step": step, "loss": value + 1.0 / step}), flush=True)
    print("not json: ignored")
    print(json.dumps({"final_loss": value}), flush=True)
