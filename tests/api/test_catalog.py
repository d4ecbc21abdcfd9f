"""GET /optimizers, GET /scales: the registries as the trainer sees them."""

from __future__ import annotations

from fastapi.testclient import TestClient

from workers.model import SCALES
from workers.optimizers import REGISTRY, resolve_hparams


def test_every_registered_optimizer_is_listed_with_its_spaces_and_defaults(sqlite_client: TestClient) -> None:
    body = sqlite_client.get("/optimizers").json()
    assert [o["name"] for o in body] == list(REGISTRY)
    by_name = {o["name"]: o for o in body}
    for name, spec in REGISTRY.items():
        got = by_name[name]
        assert got["routing"] == spec.routing and got["schedule"] == spec.schedule
        assert got["clips_itself"] == spec.clips_itself
        assert got["defaults"] == dict(spec.defaults)
        for family, space in spec.spaces.items():
            assert got["spaces"][family]["grid"] == {k: list(v) for k, v in space.grid.items()}
            assert got["spaces"][family]["baseline"] == dict(space.baseline)
            assert got["hparams"][family] == resolve_hparams(spec, family)
    adamw = by_name["adamw"]
    assert set(adamw["spaces"]) == {"paper", "tiny"}
    assert adamw["hparams"]["tiny"]["lr"] == REGISTRY["adamw"].spaces["tiny"].baseline["lr"]
    assert by_name["muon"]["schedule"] == "wsd"
    # Types survive the round trip: a boolean stays a boolean, an int an int.
    kron = by_name["kron"]["defaults"]
    assert isinstance(kron["normalize_grads"], bool) and isinstance(kron["block_size"], int)

    assert sqlite_client.get("/optimizers/soap").json() == by_name["soap"]
    r = sqlite_client.get("/optimizers/sgd")
    assert r.status_code == 404 and all(n in r.json()["detail"] for n in REGISTRY)


def test_scales_carry_shapes_and_non_embedding_parameter_counts(sqlite_client: TestClient) -> None:
    body = sqlite_client.get("/scales").json()
    assert [s["name"] for s in body] == list(SCALES)
    by_name = {s["name"]: s for s in body}
    for name, cfg in SCALES.items():
        got = by_name[name]
        # PAPER.md section 2: N = layers x (3 d d_ff + 4 d^2), the oracle written out here.
        n = cfg.n_layers * (3 * cfg.d_model * cfg.d_ff + 4 * cfg.d_model**2)
        assert got["non_embedding_params"] == n and got["tokens_at_1x_chinchilla"] == 20 * n
        assert (got["d_model"], got["n_layers"], got["seq_len"], got["family"]) == (
            cfg.d_model,
            cfg.n_layers,
            cfg.seq_len,
            cfg.family,
        )
    assert by_name["tiny-130k"]["non_embedding_params"] == 131_072  # DESIGN.md calibration: 131k
    assert by_name["130m"]["family"] == "paper" and by_name["130m"]["n_layers"] == 32
    assert sqlite_client.get("/scales/1.2b").json() == by_name["1.2b"]
    assert sqlite_client.get("/scales/7b").status_code == 404
