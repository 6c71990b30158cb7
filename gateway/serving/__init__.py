"""The running gateway: the core serving the data port and the control plane around it (`gateway`),
`gateway serve`'s lifecycle (`run`), what Python reads of the core (metrics, cache, observations)."""
