"""Every registered optimizer has an oracle here; a new optimizer without one fails this file."""

from __future__ import annotations

from workers.optimizers import REGISTRY

# optimizer -> the test (module::function) that compares it with an optax/JAX oracle
ORACLES = {
    "adamw": "test_oracle_adam_family.py::test_adamw_matches_optax_scale_by_adam",
    "nadamw": "test_oracle_adam_family.py::test_nadamw_matches_optax_scale_by_adam_nesterov",
    "lion": "test_oracle_adam_family.py::test_lion_matches_optax_scale_by_lion",
    "cautious": "test_oracle_adam_family.py::test_cautious_matches_levanter_scale_by_cautious",
    "mars": "test_oracle_adam_family.py::test_mars_matches_levanter_scale_by_mars",
    "muon": "test_oracle_orthogonal.py::test_muon_matches_levanter_chain",
    "scion": "test_oracle_orthogonal.py::test_scion_matches_levanter_chain",
    "adamh": "test_oracle_orthogonal.py::test_adamh_matches_marin_chain",
    "muonh": "test_oracle_orthogonal.py::test_muonh_matches_marin_chain",
    "adam_mini": "test_oracle_mini_sophia.py::test_adam_mini_matches_levanter_chain",
    "sophia": "test_oracle_mini_sophia.py::test_sophia_h_matches_levanter_transform",
    "soap": "test_oracle_soap.py::test_soap_matches_levanter_scale_by_soap",
    "kron": "test_oracle_kron.py::test_kron_matches_levanter_scale_by_kron",
}


def test_every_registered_optimizer_has_an_oracle() -> None:
    assert set(ORACLES) == set(REGISTRY)


def test_the_named_oracle_tests_exist() -> None:
    import importlib

    for name, target in ORACLES.items():
        module, function = target.split("::")
        loaded = importlib.import_module(f"tests.oracles.{module.removesuffix('.py')}")
        assert callable(getattr(loaded, function, None)), f"{name}: {target} not found"
