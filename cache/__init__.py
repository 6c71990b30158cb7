"""Response cache (key derivation, tiers, coalescing). Not built yet: see the cache issue."""
