"""Closing the loop: tracing scores become the gateway's risk tiers.

`trace run --apply-tiers` raises each scored account that the gateway knows to
the tier its score earns (settings `tracing.watch_at`, `throttle_at`,
`block_at`); tiers are only ever raised, so an admin's decision stands and a
quiet week does not undo a flag (an admin lowers tiers with
`accounts set-tier`). Gateways pick the change up at their next key refresh
(`gateway.key_refresh_seconds`); in shadow mode they log what the tier would
do and enforce nothing.
"""

from __future__ import annotations

from distillguard.config import TracingSettings
from distillguard.tracing.run import TraceResult


def earned_tiers(result: TraceResult, settings: TracingSettings) -> dict[str, tuple[str, str]]:
    """{account: (tier, reason)} for every account whose score earns more than `normal`."""
    wanted: dict[str, tuple[str, str]] = {}
    for account in result.accounts:
        tier = settings.tier_for(account.score)
        if tier is None:
            continue
        reason = f"tracing score {account.score:.2f}: " + "; ".join(account.evidence[:3])
        wanted[account.account_id] = (tier, reason)
    return wanted
