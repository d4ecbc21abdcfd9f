"""GET /best: the best hyperparameters and loss per (optimizer, scale, chinchilla) across all finished work.

The answer is sweep_service.service.best's (the CLI's `best` calls the same use case); this adapter parses the
filters, calls it, converts to api.schemas, and keeps a cache of serialized answers keyed by the use case's
`inputs_version`: the cache is the server's (a CLI process answers once), so it lives here.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, Response

from api.deps import ChinchillaFilter, DatabaseDep, Guarded, NameFilter, unknown_name
from api.schemas import BestResponse, BestResult
from db.session import Database
from sweep_service.service import best as use_case

router = APIRouter(tags=["best"], dependencies=Guarded)


# Answers of GET /best per database and filter, each with the version of the data it was computed from
# (sweep_service.service.best.inputs_version): a repeated request costs one query over the cells instead of
# reading, ranking and serializing every cell's best. 256 filters: far more than the (optimizer, scale,
# multiple) combinations anyone asks for, and a bound on the memory a client sending made-up multiples can take.
CACHE_FILTERS = 256
_Filter = tuple[str | None, str | None, float | None]


class _AnswerCache:
    def __init__(self) -> None:
        self.lock = threading.Lock()  # sync operations run in a threadpool
        self.answers: OrderedDict[_Filter, tuple[tuple[tuple[Any, ...], ...], bytes]] = OrderedDict()

    def get(self, key: _Filter, version: tuple[tuple[Any, ...], ...]) -> bytes | None:
        with self.lock:
            held = self.answers.get(key)
            if held is None or held[0] != version:
                return None
            self.answers.move_to_end(key)
            return held[1]

    def put(self, key: _Filter, version: tuple[tuple[Any, ...], ...], body: bytes) -> None:
        with self.lock:
            self.answers[key] = (version, body)
            self.answers.move_to_end(key)
            while len(self.answers) > CACHE_FILTERS:
                self.answers.popitem(last=False)


# One cache per Database (an app's; tests run many apps in one process), dropped with it.
_caches: weakref.WeakKeyDictionary[Database, _AnswerCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _cache_of(db: Database) -> _AnswerCache:
    with _caches_lock:
        cache = _caches.get(db)
        if cache is None:
            cache = _caches[db] = _AnswerCache()
        return cache


@router.get("/best", response_model=BestResponse)
def get_best(
    db: DatabaseDep,
    optimizer: NameFilter = None,
    scale: NameFilter = None,
    chinchilla: ChinchillaFilter = None,
) -> Response:
    """Best config and loss per (optimizer, scale, chinchilla multiple) over every sweep, with its near-tie
    configs and the trial and sweep that produced it. Filters narrow the cells; no match is an empty list."""
    cache = _cache_of(db)
    key = (optimizer, scale, chinchilla)
    version = use_case.inputs_version(db)  # before the answer: never stored under a version older than its data
    body = cache.get(key, version)
    if body is None:
        try:
            results = use_case.best(db, optimizer, scale, chinchilla)
        except use_case.UnknownName as exc:
            raise unknown_name(exc.field, exc.name, exc.valid) from None
        answer = BestResponse(results=[BestResult(**dataclasses.asdict(r)) for r in results])
        body = answer.model_dump_json().encode()
        cache.put(key, version, body)
    return Response(body, media_type="application/json")
