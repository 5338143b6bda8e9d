"""What ``/init`` personalises at run time: env vars, access token, default user and workdir."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field


@dataclass(kw_only=True)
class EnvdState:
    """Mutable run-time state shared by envd's transports (one instance per daemon)."""

    default_user: str
    default_workdir: str | None = None
    env_vars: dict[str, str] = field(default_factory=dict)
    access_token: str | None = None
    #: Wall-clock time (unix seconds) of the last ``/init`` that carried a timestamp.
    last_init_timestamp: float | None = None
    started_at: float = field(default_factory=time.time)

    def token_matches(self, presented: str | None) -> bool:
        """Constant-time check of a presented access token; True when none is required."""
        if self.access_token is None:
            return True
        if presented is None:
            return False
        return hmac.compare_digest(presented.encode(), self.access_token.encode())
