"""Settings from the environment, read once (STYLE.md rule 8: nothing else reads the environment)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Where the embedded default keeps its SQLite database and Ray Tune's files.
    sweep_home: Path = Field(default=Path("runs"), alias="SWEEP_HOME")
    # SQLAlchemy URL; default: a SQLite file under SWEEP_HOME. PostgreSQL: postgresql+psycopg2://user@host/db
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    # A Ray cluster to join (ray.init(address=...)); unset: start a local Ray.
    ray_address: str | None = Field(default=None, alias="RAY_ADDRESS")
    # CPUs a local Ray may use (unset: all).
    ray_num_cpus: int | None = Field(default=None, alias="SWEEP_RAY_NUM_CPUS")
    # Dispatcher lease: a sweep whose dispatcher sent no heartbeat for this long is reclaimed.
    lease_seconds: float = Field(default=60.0, alias="SWEEP_LEASE_SECONDS")
    # An external trial's lease (sweep_service.external): a worker that sent no heartbeat for this long loses it.
    trial_lease_seconds: float = Field(default=600.0, gt=0, alias="SWEEP_TRIAL_LEASE_SECONDS")
    # Where `sweep-service agent` finds the API.
    service_url: str = Field(default="http://127.0.0.1:8000", alias="SWEEP_SERVICE_URL")
    # Directories a sweep submitted over REST may read token files from (comma-separated).
    data_roots: str = Field(default="", alias="SWEEP_DATA_ROOTS")

    # API auth: when set, every endpoint but /healthz needs `Authorization: Bearer <token>`. Comma-separated.
    api_tokens: str = Field(default="", alias="SWEEP_API_TOKEN")  # read and write
    api_read_tokens: str = Field(default="", alias="SWEEP_API_READ_TOKENS")  # read-only
    # Largest request body the API accepts, in bytes.
    max_body_bytes: int = Field(default=1_000_000, alias="SWEEP_MAX_BODY_BYTES")
    # Most cells one sweep may have (issue 13: 10,000 cells took 75 s of planning and 36 s of server CPU).
    max_cells: int = Field(default=2000, ge=1, alias="SWEEP_MAX_CELLS")
    # Seconds the API waits for a request's headers, and between pieces of its body, before closing it.
    header_timeout_seconds: float = Field(default=30.0, gt=0, alias="SWEEP_HEADER_TIMEOUT_SECONDS")
    body_timeout_seconds: float = Field(default=30.0, gt=0, alias="SWEEP_BODY_TIMEOUT_SECONDS")

    # Origins a browser may call the API from (CORS), comma-separated, e.g. https://lab.example.org; "*" for any.
    # Unset (the default): no CORS headers, so browsers allow only same-origin pages.
    cors_origins: str = Field(default="", alias="SWEEP_CORS_ORIGINS")

    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def tokens(self) -> tuple[frozenset[str], frozenset[str]]:
        """(write tokens, read-only tokens)."""

        def split(text: str) -> frozenset[str]:
            return frozenset(t.strip() for t in text.split(",") if t.strip())

        return split(self.api_tokens), split(self.api_read_tokens)

    def data_root_paths(self) -> list[Path]:
        return [Path(p.strip()).resolve() for p in self.data_roots.split(",") if p.strip()]

    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.sweep_home / 'sweep-service.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
