"""The audit trail: who changed what, when, and why, in a hash chain."""

from gateway.audit.chain import Broken, verify
from gateway.audit.trail import AuditTrail, acting_as, current_actor, read_trail

__all__ = ["AuditTrail", "Broken", "acting_as", "current_actor", "read_trail", "verify"]
