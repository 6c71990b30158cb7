"""Response cache: key derivation and policy (pure), an in-process LRU, Redis, single flight.

- `key`: cache_key(request, model, version) -> 128-bit BLAKE2b digest
- `policy`: CachePolicy per route, Directives from `cache-control`, Outcome (`x-cache` values)
- `lru`: ByteLRU (tier 1), `redis_tier`: RedisTier (tier 2, fail-open), `breaker`: Breaker
- `coalesce`: SingleFlight, `response_cache`: ResponseCache (both tiers), `stats`: CacheStats
- `model_stats`: ModelHits, fold_hits (cache hits as Triton's statistics would count them)
"""

from cache.breaker import Breaker
from cache.coalesce import SingleFlight
from cache.key import DEFAULT_IGNORED_PARAMETERS, cache_key
from cache.lru import ByteLRU
from cache.model_stats import HitCounter, ModelHits, fold_hits
from cache.policy import CACHE_CONTROL, CachePolicy, Directives, Outcome
from cache.redis_tier import L2Key, RedisTier, RedisUnavailable
from cache.response_cache import ResponseCache
from cache.stats import CacheStats

__all__ = [
    "CACHE_CONTROL",
    "DEFAULT_IGNORED_PARAMETERS",
    "Breaker",
    "ByteLRU",
    "CachePolicy",
    "CacheStats",
    "Directives",
    "HitCounter",
    "L2Key",
    "ModelHits",
    "Outcome",
    "RedisTier",
    "RedisUnavailable",
    "ResponseCache",
    "SingleFlight",
    "cache_key",
    "fold_hits",
]
