"""The control loop (`loop`): the audit trail and the rollout controller assembled around the
core's counts; shadow comparison counters as the gates read them; webhooks' HTTP (`hooks`)."""
