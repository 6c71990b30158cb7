"""`gatewayctl`, the admin API's command line: the commands (`main`), rollouts and the audit trail
(`rollouts`, with `watch` for following one), outcomes and drift (`feedback`), and what every
command shares (`common`: options, the connection, JSON or a table)."""
