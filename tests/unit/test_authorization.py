"""Local authorization rules (evsed.core.authorization): pre-authorize, offline, the cache, ClearCache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from evsed.core.authorization import AUTH_CACHE_MAX_ENTRIES, Authorizer, Decision, IdTagInfo
from evsed.store.db import Store

NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z
LATER = NOW + 3600.0
EARLIER = NOW - 3600.0


class Keys(dict[str, Any]):
    """The configuration keys as the session holds them (Python values); a missing key raises KeyError."""


def keys(**overrides: Any) -> Keys:
    # The configkeys defaults, except LocalPreAuthorize on so the online shortcut can be exercised.
    values: dict[str, Any] = {
        "AuthorizationCacheEnabled": True,
        "LocalPreAuthorize": True,
        "LocalAuthorizeOffline": True,
        "AllowOfflineTxForUnknownId": False,
    }
    values.update(overrides)
    return Keys(values)


class FakeList:
    """A Local Authorization List stand-in; case-insensitive like the real one must be."""

    def __init__(self, entries: dict[str, IdTagInfo]) -> None:
        self.entries = {k.upper(): v for k, v in entries.items()}

    def lookup(self, id_tag: str) -> IdTagInfo | None:
        return self.entries.get(id_tag.upper())


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store(":memory:")
    yield s
    s.close()


def cached(store: Store, tag: str, info: IdTagInfo, at: float = EARLIER) -> None:
    store.auth_cache_put(tag, info, at, AUTH_CACHE_MAX_ENTRIES)


# --- IdTagInfo ------------------------------------------------------------------------------------------------
def test_from_ocpp_parses_all_fields() -> None:
    info = IdTagInfo.from_ocpp({"status": "Accepted", "expiryDate": "2024-05-01T13:00:00Z", "parentIdTag": "P"})
    assert info == IdTagInfo("Accepted", LATER, "P")


@pytest.mark.parametrize("text", [
    "2024-05-01T13:00:00Z", "2024-05-01T13:00:00.000Z", "2024-05-01T15:00:00+02:00", "2024-05-01T08:00:00-05:00",
    "2024-05-01T13:00:00",  # no zone: OCPP means UTC
])
def test_from_ocpp_expiry_formats(text: str) -> None:
    assert IdTagInfo.from_ocpp({"status": "Accepted", "expiryDate": text}).expiry == LATER


def test_from_ocpp_naive_expiry_is_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert IdTagInfo.from_ocpp({"status": "Accepted", "expiryDate": "2024-05-01T13:00:00"}).expiry == LATER
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("value", ["tomorrow", "", 12345, None])
def test_from_ocpp_unparseable_expiry_is_none(value: Any) -> None:
    assert IdTagInfo.from_ocpp({"status": "Blocked", "expiryDate": value}) == IdTagInfo("Blocked")


def test_from_ocpp_absent_fields() -> None:
    assert IdTagInfo.from_ocpp({"status": "ConcurrentTx"}) == IdTagInfo("ConcurrentTx", None, None)


@pytest.mark.parametrize("info", [{}, {"status": "Weird"}, {"status": None}, {"status": "accepted"}])
def test_from_ocpp_unknown_status_is_invalid(info: dict[str, Any]) -> None:
    assert IdTagInfo.from_ocpp(info).status == "Invalid"


def test_to_ocpp_format() -> None:
    assert IdTagInfo("Accepted", LATER + 0.25, "P").to_ocpp() == {
        "status": "Accepted", "expiryDate": "2024-05-01T13:00:00.250Z", "parentIdTag": "P"}
    assert IdTagInfo("Blocked").to_ocpp() == {"status": "Blocked"}


@pytest.mark.parametrize("info", [
    IdTagInfo("Accepted", LATER, "PARENT"), IdTagInfo("Blocked"), IdTagInfo("Expired", EARLIER),
    IdTagInfo("ConcurrentTx", None, "P2"), IdTagInfo("Invalid"),
])
def test_ocpp_round_trip(info: IdTagInfo) -> None:
    assert IdTagInfo.from_ocpp(info.to_ocpp()) == info


def test_to_ocpp_expiry_is_utc() -> None:
    text = IdTagInfo("Accepted", NOW).to_ocpp()["expiryDate"]
    assert text.endswith("Z")
    assert datetime.fromisoformat(text) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_effective_status() -> None:
    assert IdTagInfo("Accepted", LATER).effective_status(NOW) == "Accepted"
    assert IdTagInfo("Accepted", NOW).effective_status(NOW) == "Expired"  # at the expiry date it is over
    assert IdTagInfo("Accepted", EARLIER).effective_status(NOW) == "Expired"
    assert IdTagInfo("ConcurrentTx", EARLIER).effective_status(NOW) == "Expired"
    assert IdTagInfo("Accepted").effective_status(NOW) == "Accepted"
    # Refusals keep their reason even after the date.
    assert IdTagInfo("Blocked", EARLIER).effective_status(NOW) == "Blocked"
    assert IdTagInfo("Invalid", EARLIER).effective_status(NOW) == "Invalid"


# --- lookup ---------------------------------------------------------------------------------------------------
def test_lookup_is_case_insensitive(store: Store) -> None:
    auth = Authorizer(keys(), store)
    auth.remember("abc", IdTagInfo("Accepted", None, "P"), NOW)
    assert auth.lookup("ABC") == (IdTagInfo("Accepted", None, "P"), "cache")
    assert auth.lookup("aBc") is not None
    decision = auth.pre_authorize("ABC", NOW)
    assert decision is not None and decision.source == "cache"
    assert auth.offline("Abc", NOW).info.status == "Accepted"


def test_lookup_unknown(store: Store) -> None:
    assert Authorizer(keys(), store).lookup("NOPE") is None


def test_lookup_ignores_cache_when_disabled(store: Store) -> None:
    cached(store, "TAG", IdTagInfo("Accepted"))
    assert Authorizer(keys(AuthorizationCacheEnabled=False), store).lookup("TAG") is None
    assert Authorizer(keys(), store).lookup("TAG") == (IdTagInfo("Accepted"), "cache")


def test_lookup_returns_expired_entry_without_changing_it(store: Store) -> None:
    cached(store, "TAG", IdTagInfo("Accepted", EARLIER))
    auth = Authorizer(keys(), store)
    assert auth.lookup("TAG") == (IdTagInfo("Accepted", EARLIER), "cache")
    auth.offline("TAG", NOW)
    auth.pre_authorize("TAG", NOW)
    assert store.auth_cache_get("TAG") == IdTagInfo("Accepted", EARLIER)  # reads never write


def test_local_list_has_priority_over_cache(store: Store) -> None:
    cached(store, "TAG", IdTagInfo("Accepted"))
    local = FakeList({"tag": IdTagInfo("Blocked", None, "LISTPARENT")})
    auth = Authorizer(keys(), store, local)
    assert auth.lookup("TAG") == (IdTagInfo("Blocked", None, "LISTPARENT"), "local_list")
    assert auth.pre_authorize("TAG", NOW) is None  # Blocked in the list, though Accepted in the cache
    assert auth.offline("TAG", NOW) == Decision(IdTagInfo("Blocked", None, "LISTPARENT"), "local_list")


def test_local_list_falls_back_to_cache_for_tags_not_in_it(store: Store) -> None:
    cached(store, "CACHED", IdTagInfo("Accepted"))
    auth = Authorizer(keys(), store, FakeList({"LISTED": IdTagInfo("Accepted")}))
    assert auth.lookup("CACHED") == (IdTagInfo("Accepted"), "cache")
    assert auth.lookup("LISTED") == (IdTagInfo("Accepted"), "local_list")


def test_local_list_disabled_by_key(store: Store) -> None:
    cached(store, "TAG", IdTagInfo("Accepted"))
    auth = Authorizer(keys(LocalAuthListEnabled=False), store, FakeList({"TAG": IdTagInfo("Blocked")}))
    assert auth.lookup("TAG") == (IdTagInfo("Accepted"), "cache")
    enabled = Authorizer(keys(LocalAuthListEnabled=True), store, FakeList({"TAG": IdTagInfo("Blocked")}))
    assert enabled.lookup("TAG") == (IdTagInfo("Blocked"), "local_list")


def test_local_list_used_without_the_key(store: Store) -> None:
    # LocalAuthListEnabled is not defined yet: a list object alone means the list is in use.
    settings = keys()
    assert "LocalAuthListEnabled" not in settings
    auth = Authorizer(settings, store, FakeList({"TAG": IdTagInfo("Accepted")}))
    assert auth.lookup("TAG") == (IdTagInfo("Accepted"), "local_list")


# --- pre-authorize (online) -----------------------------------------------------------------------------------
def test_pre_authorize_accepted_cached_tag(store: Store) -> None:
    cached(store, "TAG", IdTagInfo("Accepted", LATER, "P"))
    decision = Authorizer(keys(), store).pre_authorize("TAG", NOW)
    assert decision == Decision(IdTagInfo("Accepted", LATER, "P"), "cache")


def test_pre_authorize_accepted_listed_tag(store: Store) -> None:
    auth = Authorizer(keys(), store, FakeList({"TAG": IdTagInfo("Accepted")}))
    assert auth.pre_authorize("TAG", NOW) == Decision(IdTagInfo("Accepted"), "local_list")


def test_pre_authorize_off_asks_csms(store: Store) -> None:
    cached(store, "TAG", IdTagInfo("Accepted"))
    assert Authorizer(keys(LocalPreAuthorize=False), store).pre_authorize("TAG", NOW) is None
    listed = Authorizer(keys(LocalPreAuthorize=False), store, FakeList({"L": IdTagInfo("Accepted")}))
    assert listed.pre_authorize("L", NOW) is None


def test_pre_authorize_unknown_tag_asks_csms(store: Store) -> None:
    assert Authorizer(keys(), store).pre_authorize("NOPE", NOW) is None


def test_pre_authorize_cache_disabled_asks_csms(store: Store) -> None:
    cached(store, "TAG", IdTagInfo("Accepted"))
    assert Authorizer(keys(AuthorizationCacheEnabled=False), store).pre_authorize("TAG", NOW) is None


def test_pre_authorize_expired_entry_asks_csms(store: Store) -> None:
    cached(store, "TAG", IdTagInfo("Accepted", EARLIER))
    auth = Authorizer(keys(), store)
    assert auth.pre_authorize("TAG", NOW) is None
    assert auth.pre_authorize("TAG", EARLIER - 1) is not None  # before the date it was fine


@pytest.mark.parametrize("status", ["Blocked", "Expired", "Invalid", "ConcurrentTx"])
def test_pre_authorize_not_accepted_asks_csms(store: Store, status: str) -> None:
    # The CSMS may have unblocked the tag since it was cached (3.5.1).
    cached(store, "TAG", IdTagInfo(status))
    assert Authorizer(keys(), store).pre_authorize("TAG", NOW) is None


# --- offline --------------------------------------------------------------------------------------------------
def test_offline_accepted_cached_tag(store: Store) -> None:
    cached(store, "TAG", IdTagInfo("Accepted", LATER, "P"))
    for allow_unknown in (False, True):
        auth = Authorizer(keys(AllowOfflineTxForUnknownId=allow_unknown), store)
        assert auth.offline("TAG", NOW) == Decision(IdTagInfo("Accepted", LATER, "P"), "cache")


def test_offline_works_without_local_pre_authorize(store: Store) -> None:
    cached(store, "TAG", IdTagInfo("Accepted"))
    assert Authorizer(keys(LocalPreAuthorize=False), store).offline("TAG", NOW).source == "cache"


def test_offline_expired_entry_is_expired(store: Store) -> None:
    cached(store, "TAG", IdTagInfo("Accepted", EARLIER, "P"))
    auth = Authorizer(keys(AllowOfflineTxForUnknownId=True), store)
    assert auth.offline("TAG", NOW) == Decision(IdTagInfo("Expired", EARLIER, "P"), "cache")


@pytest.mark.parametrize("status", ["Blocked", "Expired", "Invalid", "ConcurrentTx"])
def test_offline_known_refusal_beats_unknown_id_rule(store: Store, status: str) -> None:
    cached(store, "TAG", IdTagInfo(status))
    auth = Authorizer(keys(AllowOfflineTxForUnknownId=True), store)
    assert auth.offline("TAG", NOW) == Decision(IdTagInfo(status), "cache")


def test_offline_unknown_tag_allowed(store: Store) -> None:
    decision = Authorizer(keys(AllowOfflineTxForUnknownId=True), store).offline("NOPE", NOW)
    assert decision == Decision(IdTagInfo("Accepted"), "unknown_offline")


def test_offline_unknown_tag_refused(store: Store) -> None:
    decision = Authorizer(keys(AllowOfflineTxForUnknownId=False), store).offline("NOPE", NOW)
    assert decision == Decision(IdTagInfo("Invalid"), "not_authorized_offline")


def test_offline_without_local_authorize_offline_ignores_cache_and_list(store: Store) -> None:
    cached(store, "GOOD", IdTagInfo("Accepted"))
    cached(store, "BAD", IdTagInfo("Blocked"))
    local = FakeList({"LISTED": IdTagInfo("Accepted")})
    refuse = Authorizer(keys(LocalAuthorizeOffline=False), store, local)
    assert refuse.offline("GOOD", NOW) == Decision(IdTagInfo("Invalid"), "not_authorized_offline")
    assert refuse.offline("LISTED", NOW) == Decision(IdTagInfo("Invalid"), "not_authorized_offline")
    allow = Authorizer(keys(LocalAuthorizeOffline=False, AllowOfflineTxForUnknownId=True), store, local)
    # Nothing is looked up, so even a blocked card counts as unknown.
    assert allow.offline("BAD", NOW) == Decision(IdTagInfo("Accepted"), "unknown_offline")


def test_offline_cache_disabled_treats_cached_tag_as_unknown(store: Store) -> None:
    cached(store, "TAG", IdTagInfo("Accepted"))
    auth = Authorizer(keys(AuthorizationCacheEnabled=False), store)
    assert auth.offline("TAG", NOW) == Decision(IdTagInfo("Invalid"), "not_authorized_offline")


# --- remember / clear -----------------------------------------------------------------------------------------
def test_remember_stores_and_updates(store: Store) -> None:
    auth = Authorizer(keys(), store)
    auth.remember("TAG", IdTagInfo("Accepted", LATER, "P"), NOW)
    assert store.auth_cache_get("TAG") == IdTagInfo("Accepted", LATER, "P")
    # A later idTagInfo (e.g. StopTransaction.conf) replaces it: a blocked card is refused offline from now on.
    auth.remember("tag", IdTagInfo("Blocked"), NOW + 1)
    assert store.auth_cache_size() == 1
    assert auth.offline("TAG", NOW + 2).info.status == "Blocked"


def test_remember_stores_refusals_too(store: Store) -> None:
    auth = Authorizer(keys(AllowOfflineTxForUnknownId=True), store)
    auth.remember("TAG", IdTagInfo("Invalid"), NOW)
    assert auth.offline("TAG", NOW).info.status == "Invalid"


def test_remember_does_nothing_when_cache_disabled(store: Store) -> None:
    Authorizer(keys(AuthorizationCacheEnabled=False), store).remember("TAG", IdTagInfo("Accepted"), NOW)
    assert store.auth_cache_size() == 0
    assert store.auth_cache_get("TAG") is None


def test_remember_skips_tags_in_local_list(store: Store) -> None:
    auth = Authorizer(keys(), store, FakeList({"LISTED": IdTagInfo("Accepted")}))
    auth.remember("listed", IdTagInfo("Blocked"), NOW)
    auth.remember("OTHER", IdTagInfo("Accepted"), NOW)
    assert store.auth_cache_get("LISTED") is None
    assert store.auth_cache_get("OTHER") == IdTagInfo("Accepted")


def test_remember_evicts_at_max_entries(store: Store) -> None:
    auth = Authorizer(keys(), store, max_entries=2)
    auth.remember("A", IdTagInfo("Accepted"), NOW)
    auth.remember("B", IdTagInfo("Accepted"), NOW + 1)
    auth.remember("C", IdTagInfo("Accepted"), NOW + 2)
    assert store.auth_cache_size() == 2
    assert auth.lookup("A") is None
    assert auth.lookup("B") is not None and auth.lookup("C") is not None


def test_default_max_entries_is_the_bound(store: Store) -> None:
    calls: list[int] = []

    class Spy:
        def auth_cache_get(self, id_tag: str) -> IdTagInfo | None:
            return None

        def auth_cache_put(self, id_tag: str, info: IdTagInfo, updated_at: float, max_entries: int) -> None:
            calls.append(max_entries)
            assert updated_at == NOW

        def auth_cache_clear(self) -> int:
            return 0

        def auth_cache_size(self) -> int:
            return 0

    Authorizer(keys(), Spy()).remember("TAG", IdTagInfo("Accepted"), NOW)
    assert calls == [AUTH_CACHE_MAX_ENTRIES] == [10_000]


def test_clear_cache(store: Store) -> None:
    auth = Authorizer(keys(AllowOfflineTxForUnknownId=False), store)
    auth.remember("A", IdTagInfo("Accepted"), NOW)
    auth.remember("B", IdTagInfo("Blocked"), NOW)
    assert auth.clear_cache() == "Accepted"
    assert store.auth_cache_size() == 0
    assert auth.offline("A", NOW) == Decision(IdTagInfo("Invalid"), "not_authorized_offline")
    assert auth.clear_cache() == "Accepted"  # an empty cache clears fine too


def test_clear_cache_accepted_even_when_disabled(store: Store) -> None:
    cached(store, "A", IdTagInfo("Accepted"))
    assert Authorizer(keys(AuthorizationCacheEnabled=False), store).clear_cache() == "Accepted"
    assert store.auth_cache_size() == 0


def test_clear_cache_leaves_local_list_alone(store: Store) -> None:
    auth = Authorizer(keys(), store, FakeList({"L": IdTagInfo("Accepted")}))
    auth.clear_cache()
    assert auth.lookup("L") == (IdTagInfo("Accepted"), "local_list")


# --- parent ---------------------------------------------------------------------------------------------------
def test_parent_of(store: Store) -> None:
    auth = Authorizer(keys(), store, FakeList({"CHILD1": IdTagInfo("Accepted", None, "LISTGROUP")}))
    auth.remember("child2", IdTagInfo("Accepted", None, "CACHEGROUP"), NOW)
    auth.remember("ORPHAN", IdTagInfo("Accepted"), NOW)
    assert auth.parent_of("child1") == "LISTGROUP"
    assert auth.parent_of("CHILD2") == "CACHEGROUP"
    assert auth.parent_of("ORPHAN") is None
    assert auth.parent_of("NOPE") is None


def test_parent_of_expired_entry_still_known(store: Store) -> None:
    cached(store, "TAG", IdTagInfo("Accepted", EARLIER, "GROUP"))
    assert Authorizer(keys(), store).parent_of("TAG") == "GROUP"


# --- persistence ----------------------------------------------------------------------------------------------
def test_cache_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "evsed.sqlite3"
    first = Store(path)
    Authorizer(keys(), first).remember("Card", IdTagInfo("Accepted", LATER, "G"), NOW)
    first.close()
    second = Store(path)
    try:
        auth = Authorizer(keys(), second)
        assert auth.offline("CARD", NOW) == Decision(IdTagInfo("Accepted", LATER, "G"), "cache")
        assert auth.pre_authorize("card", NOW) is not None
    finally:
        second.close()
