"""Local authorization: the rules of OCPP 1.6 section 3.5 (Local Authorization & Offline Behaviour).

Pure decisions over three inputs: the configuration keys, the Authorization Cache (persistent, in the store) and
optionally the Local Authorization List. The OCPP session asks ``pre_authorize`` before sending Authorize.req,
``offline`` when the CSMS cannot be reached, and feeds every idTagInfo the CSMS sends back to ``remember``.
Time is passed in as wall-clock epoch seconds because expiryDate is an absolute UTC date.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

# Bounds memory and disk on small boards; when full, NOT-valid entries go first, then the least recently updated
# valid ones (3.5.1).
AUTH_CACHE_MAX_ENTRIES = 10_000

AUTHORIZATION_STATUSES = frozenset({"Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"})
# The statuses that authorize (3.5.2: "valid" is Accepted/ConcurrentTx); only these can run out with time.
VALID_STATUSES = frozenset({"Accepted", "ConcurrentTx"})


@dataclass(frozen=True, slots=True)
class IdTagInfo:
    status: str  # AuthorizationStatus: Accepted | Blocked | Expired | Invalid | ConcurrentTx
    expiry: float | None = None  # wall-clock epoch seconds (UTC); None = no expiry date
    parent_id_tag: str | None = None

    @classmethod
    def from_ocpp(cls, info: Mapping[str, Any]) -> IdTagInfo:
        """Parse an OCPP idTagInfo; anything unrecognisable degrades to the safe side (Invalid, no expiry)."""
        status = info.get("status")
        if not isinstance(status, str) or status not in AUTHORIZATION_STATUSES:
            status = "Invalid"
        parent = info.get("parentIdTag")
        return cls(status, _parse_datetime(info.get("expiryDate")), parent if isinstance(parent, str) else None)

    def to_ocpp(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.expiry is not None:
            stamp = datetime.fromtimestamp(self.expiry, UTC).isoformat(timespec="milliseconds")
            out["expiryDate"] = stamp.replace("+00:00", "Z")
        if self.parent_id_tag is not None:
            out["parentIdTag"] = self.parent_id_tag
        return out

    def effective_status(self, wall_now: float) -> str:
        # 3.5.1: an entry whose validity ran out counts as Expired; computed here so reads never write.
        if self.status in VALID_STATUSES and self.expiry is not None and self.expiry <= wall_now:
            return "Expired"
        return self.status


def _parse_datetime(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        # OCPP times are UTC; a CSMS that forgets the zone still means UTC, not the charge point's local time.
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError):
        return None


class TagLookup(Protocol):
    """Where identifiers are looked up: the Local Authorization List implements this too."""

    def lookup(self, id_tag: str) -> IdTagInfo | None: ...


class CacheStore(Protocol):
    """The persistent Authorization Cache (evsed.store.db.Store); keys are case-insensitive (IdToken)."""

    def auth_cache_get(self, id_tag: str) -> IdTagInfo | None: ...

    def auth_cache_put(self, id_tag: str, info: IdTagInfo, updated_at: float, max_entries: int) -> None: ...

    def auth_cache_clear(self) -> int: ...

    def auth_cache_size(self) -> int: ...


class Settings(Protocol):
    """Read access to the OCPP configuration keys (AuthorizationCacheEnabled, LocalPreAuthorize, ...)."""

    def __getitem__(self, name: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class Decision:
    info: IdTagInfo
    source: str  # "local_list" | "cache" | "unknown_offline" | "not_authorized_offline"


class Authorizer:
    def __init__(self, keys: Settings, cache: CacheStore, local_list: TagLookup | None = None, *,
                 max_entries: int = AUTH_CACHE_MAX_ENTRIES) -> None:
        self._keys = keys
        self._cache = cache
        self._local_list = local_list
        self._max_entries = max_entries

    def _local_entry(self, id_tag: str) -> IdTagInfo | None:
        if self._local_list is None:
            return None
        try:
            enabled = bool(self._keys["LocalAuthListEnabled"])
        except KeyError:
            # The key arrives with the Local Auth List Management profile; a list object alone means "in use".
            enabled = True
        return self._local_list.lookup(id_tag) if enabled else None

    def _cache_enabled(self) -> bool:
        return bool(self._keys["AuthorizationCacheEnabled"])

    def lookup(self, id_tag: str) -> tuple[IdTagInfo, str] | None:
        """The entry for a tag and where it came from; the local list has priority over the cache (3.5.3)."""
        listed = self._local_entry(id_tag)
        if listed is not None:
            return listed, "local_list"
        if self._cache_enabled():
            cached = self._cache.auth_cache_get(id_tag)
            if cached is not None:
                return cached, "cache"
        return None

    def pre_authorize(self, id_tag: str, wall_now: float) -> Decision | None:
        """Online: a Decision to start at once, or None to ask the CSMS with Authorize.req."""
        if not bool(self._keys["LocalPreAuthorize"]):
            return None
        found = self.lookup(id_tag)
        if found is None:
            return None
        info, source = found
        # Anything but a live Accepted goes to the CSMS: it may have unblocked or renewed the tag since (3.5.1).
        if info.effective_status(wall_now) != "Accepted":
            return None
        return Decision(info, source)

    def offline(self, id_tag: str, wall_now: float) -> Decision:
        """Offline: the local answer (3.5, 3.5.4); always a Decision, the CSMS cannot be asked."""
        if bool(self._keys["LocalAuthorizeOffline"]):
            found = self.lookup(id_tag)
            if found is not None:
                info, source = found
                status = info.effective_status(wall_now)
                # A known tag is never "unknown": Blocked/Expired/Invalid stay refused even when unknown tags
                # would be let in (3.5.4), and an expired Accepted is reported as Expired.
                return Decision(info if status == info.status else dataclasses.replace(info, status=status), source)
        if bool(self._keys["AllowOfflineTxForUnknownId"]):
            return Decision(IdTagInfo("Accepted"), "unknown_offline")
        return Decision(IdTagInfo("Invalid"), "not_authorized_offline")

    def remember(self, id_tag: str, info: IdTagInfo, wall_now: float) -> None:
        """Record an idTagInfo received from the CSMS (Authorize/StartTransaction/StopTransaction.conf)."""
        if not self._cache_enabled():
            return
        # 3.5.3: identifiers known in the Local Authorization List are not added to the cache.
        if self._local_entry(id_tag) is not None:
            return
        self._cache.auth_cache_put(id_tag, info, wall_now, self._max_entries)

    def clear_cache(self) -> str:
        """ClearCache.req: the cache exists (even when disabled), so clearing it always succeeds."""
        self._cache.auth_cache_clear()
        return "Accepted"

    def parent_of(self, id_tag: str) -> str | None:
        found = self.lookup(id_tag)
        return found[0].parent_id_tag if found is not None else None
