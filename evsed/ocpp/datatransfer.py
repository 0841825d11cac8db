"""DataTransfer handlers by vendor: the extension point for integrators (OCPP 1.6 sections 4.3 and 5.6).

A handler gets the messageId and data of a DataTransfer.req from the CSMS and returns (status, data). A
vendorId nobody registered is answered UnknownVendorId; a registered vendor without a handler for the
messageId, UnknownMessageId. vendorId and messageId compare case-insensitively (CiString255 / CiString50).

    registry.register("com.example", lambda message_id, data: ("Accepted", "pong"), message_ids=["Ping"])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[str | None, str | None], tuple[str, str | None]]
STATUSES = frozenset({"Accepted", "Rejected", "UnknownMessageId", "UnknownVendorId"})


class DataTransferRegistry:
    def __init__(self) -> None:
        # vendor -> (messageId or None for "any message") -> handler
        self._vendors: dict[str, dict[str | None, Handler]] = {}

    def register(self, vendor_id: str, handler: Handler, message_ids: Iterable[str] | None = None) -> None:
        """Handle this vendor's messages: only the given messageIds, or every message when none are given."""
        table = self._vendors.setdefault(vendor_id.lower(), {})
        if message_ids is None:
            table[None] = handler
        else:
            for message_id in message_ids:
                table[message_id.lower()] = handler

    def vendors(self) -> list[str]:
        return sorted(self._vendors)

    def handle(self, vendor_id: str, message_id: str | None, data: str | None) -> dict[str, Any]:
        table = self._vendors.get(vendor_id.lower())
        if table is None:
            return {"status": "UnknownVendorId"}
        handler = table.get(message_id.lower() if message_id is not None else None) or table.get(None)
        if handler is None:
            return {"status": "UnknownMessageId"}
        try:
            status, out = handler(message_id, data)
        except Exception:
            log.exception("ocpp: DataTransfer handler for %s/%s failed", vendor_id, message_id)
            return {"status": "Rejected"}
        if status not in STATUSES:
            log.error("ocpp: DataTransfer handler for %s returned status %r; answering Rejected", vendor_id, status)
            return {"status": "Rejected"}
        answer: dict[str, Any] = {"status": status}
        if out is not None:
            answer["data"] = out
        return answer
