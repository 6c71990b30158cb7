"""Rollouts the gateway drives itself: `phases`, `spec`, `gates` and `machine` are pure (the
state machine and its decisions); `totals` reads what variants answered; `controller` is the
I/O around them (route changes, webhooks, persistence, the audit trail)."""
