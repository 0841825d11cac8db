"""Composition root: builds board, safety supervisor, station, OCPP session, store and control server, and
runs their lifecycle (safe state first, READY, watchdog, graceful stop)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from evsed.board.interface import (
    Board,
    BoardEvent,
    CableChanged,
    Device,
    DeviceFault,
    LockFeedback,
    MeterReading,
    PilotChanged,
    TagRead,
)
from evsed.board.sim import SimBoard
from evsed.config import Config
from evsed.control.server import ControlServer, RequestError
from evsed.core import station as st
from evsed.core.authorization import Authorizer
from evsed.core.pilot import PilotState
from evsed.core.safety import SafetySupervisor
from evsed.ocpp.client import OcppClient
from evsed.ocpp.configkeys import ConfigKeys
from evsed.ocpp.datatransfer import DataTransferRegistry
from evsed.ocpp.metering import Measurement
from evsed.ocpp.schema import Validator
from evsed.ocpp.session import Identity, OcppSession
from evsed.smartcharging.profiles import Limits
from evsed.smartcharging.service import ConnectorLimits, SmartCharging
from evsed.store.db import Store, TransactionRow

log = logging.getLogger("evsed")

GRACEFUL_STOP_S = 5.0
# A Soft reset gives EVs the full IEC 61851 time to stop drawing; a Hard reset only a moment.
SOFT_RESET_EV_WAIT_S = st.STOP_UNDER_LOAD_TIMEOUT_S
RESET_DELIVERY_S = 5.0
METER_PERSIST_INTERVAL_S = 60.0
UNLOCK_TIMEOUT_S = 2.0
# hardware.md 2.3: the aux contact must follow the coil within 100 ms, else welded / stuck open.
CONTACTOR_FEEDBACK_TIMEOUT_S = 0.1
LOCAL_LIMIT = "local_limit.{}"
CLEAN_SHUTDOWN = "clean_shutdown"
AVAILABILITY = "availability.{}"
# Our own DataTransfer vendorId: operators can read the charger's status through their CSMS.
EVSED_VENDOR_ID = "org.evsed"
FEATURE_PROFILES = ("Core", "SmartCharging")
# A phase carries current when it draws more than this: how many phases a W limit is shared by.
PHASE_IN_USE_A = 1.0
LIMITER_RETRY_S = 60.0


class BackendUnavailable(Exception):
    pass


def build_board(cfg: Config, initial_energy: dict[int, float] | None = None) -> Board:
    hw = cfg.hardware
    if hw.backend == "rpi":
        from evsed.board.rpi.adc import AdcError
        from evsed.board.rpi.board import BoardSetupError, DeviceFactory, RpiBoard
        from evsed.board.rpi.gpio import GpioError
        from evsed.board.rpi.sysfs_pwm import PwmError

        try:
            if os.environ.get("EVSED_EMULATE") == "1":
                # Development and benches only: the Pi's devices emulated at their lowest layer.
                from evsed.board.rpi.emulated_world import emulated_board

                log.warning("rpi backend on EMULATED devices (EVSED_EMULATE=1): not for a real charger")
                board, _ = emulated_board(cfg.board, Path(cfg.storage.dir) / "emulated-hw")
                return board  # type: ignore[no-any-return]
            return RpiBoard(cfg.board, DeviceFactory())
        except (BoardSetupError, OSError, AdcError, GpioError, PwmError, ValueError) as exc:
            # A device the profile names cannot be opened: one line, exit 2; systemd retries (Restart=on-failure)
            # after ExecStopPost has made the outputs safe.
            raise BackendUnavailable(f"{cfg.path}: hardware.board: {exc}") from None
    return SimBoard(hw.connectors, hw.voltage_v, hw.meter_poll_interval_s, initial_energy,
                    world_path=Path(cfg.storage.dir) / "sim-world.json")


def force_safe_state(cfg: Config) -> list[str]:
    """`evsed --safe-state` (systemd ExecStopPost): contactors open, pilot at the safe level; the problems."""
    if cfg.hardware.backend == "rpi":
        from evsed.board.rpi.board import RpiBoard

        return RpiBoard.force_safe(cfg.board)
    build_board(cfg).safe_state()
    return []


class Notifier:
    """sd_notify, plus the watchdog period that sdnotify does not parse for us."""

    def __init__(self) -> None:
        self._n: Any = None
        if os.environ.get("NOTIFY_SOCKET"):
            import sdnotify  # imported lazily: not needed outside systemd

            self._n = sdnotify.SystemdNotifier()

    def notify(self, state: str) -> None:
        if self._n is not None:
            self._n.notify(state)

    @staticmethod
    def watchdog_period() -> float | None:
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 1e6 / 2
        except ValueError:
            return None


class Daemon:
    def __init__(self, cfg: Config, board: Board | None = None) -> None:
        """board: built from cfg unless given (tests and benches pass a board on emulated devices)."""
        self.cfg = cfg
        self.store = Store(cfg.storage.database)
        n = cfg.hardware.connectors
        sc = cfg.smart_charging
        self.keys = ConfigKeys(self.store, cfg.ocpp.config, n, fixed_cable=cfg.hardware.fixed_cable,
                               message_timeout_s=math.ceil(cfg.ocpp.call_timeout_s),
                               feature_profiles=FEATURE_PROFILES, fixed=sc.ocpp_keys())
        # A meter register never goes back: start the sim's from the highest value we ever recorded.
        registers = self.store.meter_registers()
        for cid, wh in self.store.last_transaction_meters().items():
            registers[cid] = max(registers.get(cid, 0.0), wh)
        self.board = board if board is not None else build_board(cfg, registers)
        profile = cfg.board
        ventilation = bool(profile.ventilation) if profile is not None else False
        feedback_timeout = ({c.id: c.contactor.feedback_timeout_ms / 1000.0 for c in profile.connectors}
                            if profile is not None else CONTACTOR_FEEDBACK_TIMEOUT_S)
        self.supervisor = SafetySupervisor(self.board, self._from_board_thread, n, ventilation=ventilation,
                                           feedback_timeout_s=feedback_timeout)
        self.station = st.Station(n, cfg.hardware.max_current_a, self.keys, fixed_cable=cfg.hardware.fixed_cable,
                                  ventilation=ventilation)
        for cid in self.station.connectors:
            tolerance, oc_time = cfg.hardware.overcurrent_tolerance_a, cfg.hardware.overcurrent_time_s
            if profile is not None:
                spec = profile.connectors[cid - 1]
                # The installation limit ([hardware] max_current_a) and what this connector's parts allow.
                self.station.connectors[cid].max_current_a = min(cfg.hardware.max_current_a, spec.max_current_a)
                if spec.overcurrent is not None:
                    tolerance, oc_time = spec.overcurrent.tolerance_a, spec.overcurrent.time_s
            self.station.configure_overcurrent(cid, tolerance, oc_time)
        for cid, amps in self._persisted_local_limits().items():
            self.station.connectors[cid].local_limit_a = amps
        self.station.restore_availability(self._persisted_availability())
        self.meters: dict[int, MeterReading] = {}
        self.smart_charging = SmartCharging(
            self.store, Limits(max_stack_level=int(self.keys["ChargeProfileMaxStackLevel"]),
                               allowed_units=tuple(self.keys["ChargingScheduleAllowedChargingRateUnit"]),
                               max_periods=int(self.keys["ChargingScheduleMaxPeriods"]),
                               max_installed=int(self.keys["MaxChargingProfilesInstalled"]), number_of_connectors=n),
            local_max_a={cid: c.max_current_a for cid, c in self.station.connectors.items()},
            voltage=cfg.hardware.voltage_v, default_phases=cfg.hardware.phases,
            max_duration_s=sc.max_composite_duration_s)
        self.smart_charging.on_change = self._recompute_limits
        self.data_transfer = DataTransferRegistry()
        self.data_transfer.register(EVSED_VENDOR_ID, self._vendor_data_transfer, message_ids=["Status"])
        cp = cfg.charge_point
        self.session = OcppSession(
            Identity(cp.id, cp.vendor, cp.model, cp.serial_number, cp.firmware_version),
            self.keys, self.store, self, Validator("v16"), connectors=n, now=time.monotonic(),
            wall_offset=time.time() - time.monotonic(), authorizer=Authorizer(self.keys, self.store),
            data_transfer=self.data_transfer, smart_charging=self.smart_charging)
        self.session.on_clock_set = self._recompute_limits
        # Charging profiles carried by RemoteStartTransaction, installed when their transaction starts: by
        # connector, or by idTag when the connector is only chosen at plug-in.
        # The deadline (monotonic) is ConnectionTimeOut: after it the remote start is void, and so is its profile.
        self.remote_start_profiles: dict[int | str, tuple[dict[str, Any], float]] = {}
        self._limit_timer: asyncio.TimerHandle | None = None
        self._phases_in_use: dict[int, int] = {}
        self.reset_requested: str | None = None
        self._unlock_waiting: dict[int, tuple[Callable[[str], None], asyncio.TimerHandle | None]] = {}
        self.client = OcppClient(self.session, cfg.ocpp.url, reconnect_min_s=cfg.ocpp.reconnect_min_s,
                                 reconnect_max_s=cfg.ocpp.reconnect_max_s,
                                 ping_interval=lambda: float(self.keys["WebSocketPingInterval"]),
                                 authorization_key=lambda: self.keys["AuthorizationKey"])
        self.control = ControlServer(cfg.control.socket, self.handle_request)
        self.notifier = Notifier()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._seen_pilot: set[int] = set()
        self._meter_saved_at = 0.0
        self._orphans: dict[int, TransactionRow] = {r.connector: r for r in self.store.open_transactions()}
        for cid in self.station.connectors:
            if cid not in self._orphans:
                # A TxProfile whose transaction ended while we were down (or in a run that crashed) goes now.
                self.smart_charging.transaction_ended(cid)
        self._last_exit_clean = self.store.get_state(CLEAN_SHUTDOWN) == "1"
        self.keys.on_change(lambda name, value: self.session.config_changed(name, value, time.monotonic()))

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        # The safety loop runs in the board thread; a short GIL switch interval keeps it from waiting long
        # behind a busy event loop.
        sys.setswitchinterval(0.001)
        self.supervisor.safe_state()
        self.store.set_state(CLEAN_SHUTDOWN, "0")
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._stop.set)
        await self.control.start()
        self.board.start(self.supervisor.on_board_event)
        self._recompute_limits()
        if self._orphans:
            log.info("found %d transaction(s) open from the previous run: %s", len(self._orphans),
                     ", ".join(f"connector {c} (local id {r.local_id})" for c, r in self._orphans.items()))
        self.notifier.notify("READY=1")
        self.notifier.notify(f"STATUS={self.summary()}")
        log.info("evsed ready: %s, %d connector(s), backend %s, CSMS %s", self.cfg.charge_point.id,
                 self.cfg.hardware.connectors, self.cfg.hardware.backend, self.client.url)
        tasks = [asyncio.create_task(self.client.run(), name="ocpp"),
                 asyncio.create_task(self._station_timer(), name="station-timer")]
        if (period := self.notifier.watchdog_period()) is not None:
            tasks.append(asyncio.create_task(self._watchdog(period), name="watchdog"))
        await self._stop.wait()
        await self._shutdown(tasks)
        return 0

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        """End transactions (Reboot, or SoftReset/HardReset), open contactors, deliver what is queued, close.

        On SIGTERM all of it fits in GRACEFUL_STOP_S (systemd's stop timeout is longer); a Soft reset gives EVs
        the full time to stop drawing so the contactors open without load."""
        start = time.monotonic()
        reset = self.reset_requested
        if reset is None:
            ev_wait, deliver_until = 1.0, start + GRACEFUL_STOP_S - 1.5
            reason = st.StopReason.REBOOT
        else:
            ev_wait = SOFT_RESET_EV_WAIT_S if reset == "Soft" else 1.0
            deliver_until = start + ev_wait + RESET_DELIVERY_S
            reason = st.StopReason.SOFT_RESET if reset == "Soft" else st.StopReason.HARD_RESET
        self.notifier.notify("STOPPING=1")
        running = [cid for cid in self.station.connectors if self.session.active_transaction(cid) is not None]
        log.info("stopping%s: ending %d transaction(s) (%s) and opening contactors",
                 f" for a {reset} reset" if reset else "", len(running), reason)
        self._apply(self.station.stop_all(reason, time.monotonic()))
        # Give EVs a moment to stop drawing (C -> B) so the contactors open without load.
        while any(c.stopping is not None for c in self.station.connectors.values()) and \
                time.monotonic() < start + ev_wait:
            await asyncio.sleep(0.02)
        self._apply(self.station.finish_stops(time.monotonic()))
        self.supervisor.safe_state()
        self._persist_meters(time.monotonic())
        # Deliver what is queued while the CSMS is there; what is left stays persisted for the next start.
        while self.session.connected and self.store.queue_length() and time.monotonic() < deliver_until:
            await asyncio.sleep(0.02)
        if self.store.queue_length():
            log.info("stopping: %d transaction message(s) stay queued for the next start",
                     self.store.queue_length())
        try:
            await asyncio.wait_for(self.client.close(), max(0.1, deliver_until + 0.5 - time.monotonic()))
        except TimeoutError:
            log.warning("stopping: the CSMS did not complete the close handshake")
        if self._limit_timer is not None:
            self._limit_timer.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.control.stop()
        self.board.stop()
        self.supervisor.close()
        self.store.set_state(CLEAN_SHUTDOWN, "1")
        self.store.close()
        log.info("stopped")

    async def _watchdog(self, period: float) -> None:
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(period)

    async def _station_timer(self) -> None:
        while True:
            now = time.monotonic()
            deadline = self.station.next_deadline()
            await asyncio.sleep(min(1.0, max(0.01, (deadline or now + 1.0) - now)))
            self._apply(self.station.tick(time.monotonic()))
            self.notifier.notify(f"STATUS={self.summary()}")

    # --- board events -------------------------------------------------------------------------------------
    def _from_board_thread(self, event: BoardEvent) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_board_event, event)

    def _on_board_event(self, event: BoardEvent) -> None:
        now = time.monotonic()
        if isinstance(event, PilotChanged):
            log.info("connector %d: pilot %s%s", event.connector, event.state,
                     " (diode fault)" if event.diode_fault else "")
            if event.connector not in self._seen_pilot:
                self._seen_pilot.add(event.connector)
                self._adopt_orphan(event, now)
            self._apply(self.station.pilot(event.connector, event.state, event.diode_fault, now))
        elif isinstance(event, MeterReading):
            self.meters[event.connector] = event
            self._track_phases(event)
            self._apply(self.station.meter(event.connector, event.energy_wh, event.power_w, now, event.current_a))
            if now - self._meter_saved_at >= self._meter_persist_interval():
                self._persist_meters(now)
        elif isinstance(event, DeviceFault):
            level = logging.WARNING if event.active else logging.INFO
            log.log(level, "connector %d: %s %s: %s", event.connector, event.device,
                    "failed" if event.active else "recovered", event.info)
            if event.device == Device.LOCK and event.active:
                self._unlock_answer(event.connector, "UnlockFailed")
            self._apply(self.station.device_fault(event.connector, str(event.device), event.error_code,
                                                  event.active, event.info, now))
        elif isinstance(event, LockFeedback):
            if not event.locked:
                self._unlock_answer(event.connector, "Unlocked")
            elif event.connector in self._unlock_waiting:
                self._unlock_answer(event.connector, "UnlockFailed")
        elif isinstance(event, CableChanged):
            log.info("connector %d: %s", event.connector, "no cable" if event.ampacity_a is None
                     else f"cable rated {event.ampacity_a:g} A")
            self._apply(self.station.set_cable(event.connector, event.ampacity_a, now))
        elif isinstance(event, TagRead):
            log.info("reader: card %s", event.id_tag)
            self._apply(self.station.tag(event.id_tag, now))

    def _meter_persist_interval(self) -> float:
        """The last register is persisted at least every MeterValueSampleInterval (for a PowerLoss stop)."""
        interval = int(self.keys["MeterValueSampleInterval"])
        return min(METER_PERSIST_INTERVAL_S, float(interval)) if interval > 0 else METER_PERSIST_INTERVAL_S

    def _persist_meters(self, now: float) -> None:
        """Meter registers and the running transactions' last reading, for a restart after a power cut."""
        self._meter_saved_at = now
        for cid, reading in self.meters.items():
            self.store.save_meter_register(cid, reading.energy_wh)
            local_id = self.session.active_transaction(cid)
            if local_id is not None:
                self.store.touch_transaction(local_id, reading.energy_wh, self.session.timestamp(now))

    def _adopt_orphan(self, event: PilotChanged, now: float) -> None:
        """A transaction left open by the previous run: resume it if the EV is still there, else close it."""
        row = self._orphans.pop(event.connector, None)
        if row is None:
            return
        plugged = event.state not in (PilotState.A, PilotState.E, PilotState.F)
        if plugged and self.cfg.system.resume_transactions:
            log.info("connector %d: EV still connected, resuming transaction %d", row.connector, row.local_id)
            self._apply(self.station.resume_transaction(row.connector, row.id_tag, row.meter_start_wh,
                                                        row.parent_id_tag, row.last_meter_wh))
            self.session.transaction_resumed(row.connector, row.local_id, now)
            return
        reason = st.StopReason.REBOOT if self._last_exit_clean else st.StopReason.POWER_LOSS
        log.info("connector %d: %s after restart, closing transaction %d (%s, meterStop %.0f Wh)",
                 row.connector, "EV gone" if not plugged else "not resuming", row.local_id, reason,
                 row.last_meter_wh)
        # Stamped with the last moment the previous run is known to have been alive.
        stamp = row.last_meter_at or row.started_at
        self.session.close_orphan(row.local_id, row.last_meter_wh, stamp, reason)
        self.smart_charging.transaction_ended(row.connector)
        self.client.kick()

    def _persisted_local_limits(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for cid in self.station.connectors:
            value = self.store.get_state(LOCAL_LIMIT.format(cid))
            if value:
                out[cid] = float(value)
        return out

    def _persisted_availability(self) -> dict[int, bool]:
        out: dict[int, bool] = {}
        for cid in range(0, self.cfg.hardware.connectors + 1):
            value = self.store.get_state(AVAILABILITY.format(cid))
            if value is not None:
                out[cid] = value == "Operative"
        return out

    # --- smart charging -----------------------------------------------------------------------------------
    def _recompute_limits(self, due: float | None = None) -> None:
        """Hand each connector its composite-schedule limit, and set one timer to the next change (no polling).

        due: the wall-clock time a limiter timer was set for; evaluating at it (not at the moment the timer fired,
        which may be a hair early) makes the new period apply exactly at its boundary."""
        now = time.monotonic()
        wall = self.session.wall(now)
        at = datetime.fromtimestamp(max(wall, due) if due is not None else wall, UTC)
        phases = {cid: self._phases_in_use.get(cid, self.cfg.hardware.phases) for cid in self.station.connectors}
        try:
            self.smart_charging.purge_expired(at)
            result = self.smart_charging.connector_limits(at, self.session.transactions(), phases)
        except Exception:
            # A bug must not take the charger down: the last limits stay in force and we try again later.
            log.exception("smart charging: computing the connector limits failed; keeping the current ones")
            result = ConnectorLimits({}, at + timedelta(seconds=LIMITER_RETRY_S))
        for cid, amps in result.amps.items():
            c = self.station.connectors[cid]
            if c.limit_a != amps:
                log.info("connector %d: charging-profile limit %s", cid, "lifted" if amps is None else f"{amps:g} A")
                self._apply(self.station.set_limit(cid, amps, now))
        if self._loop is None:
            return
        if self._limit_timer is not None:
            self._limit_timer.cancel()
        next_wall = result.next_change.timestamp()
        delay = max(0.0, next_wall - self.session.wall(time.monotonic()))
        self._limit_timer = self._loop.call_later(delay, self._recompute_limits, next_wall)

    def _track_phases(self, reading: MeterReading) -> None:
        """W limits are shared by the phases the EV really draws on; a change of that count recomputes."""
        drawing = sum(1 for a in reading.current_a if a > PHASE_IN_USE_A)
        if not drawing:
            return
        if self._phases_in_use.get(reading.connector) != drawing:
            self._phases_in_use[reading.connector] = drawing
            self._recompute_limits()

    # --- station actions ----------------------------------------------------------------------------------
    def _apply(self, actions: list[st.Action]) -> None:
        now = time.monotonic()
        for a in actions:
            if isinstance(a, st.SetPwm):
                if a.duty != self.station.connectors[a.connector].pwm_duty:
                    # Superseded while this list was applied (e.g. a transaction start installed a charging profile
                    # and the newer duty already went out): the board only ever gets the station's latest duty.
                    continue
                log.info("connector %d: %s", a.connector,
                         f"PWM {a.duty:.1f} % ({a.amps:g} A offered)" if a.duty is not None else "PWM off")
                self.board.set_pwm(a.connector, a.duty)
            elif isinstance(a, st.SetContactor):
                granted = self.supervisor.request_contactor(a.connector, a.closed)
                if a.closed and not granted:
                    log.info("connector %d: close refused by the safety supervisor", a.connector)
                self.station.contactor_state(a.connector, self.supervisor.contactor_closed(a.connector))
            elif isinstance(a, st.SetLock):
                self.board.set_lock(a.connector, a.locked)
            elif isinstance(a, st.RequestAuthorization):
                self.session.authorize(a.id_tag, now)
            elif isinstance(a, st.TransactionStarted):
                log.info("connector %d: transaction started for %s at %.0f Wh", a.connector, a.id_tag,
                         a.meter_wh)
                self.session.transaction_started(a.connector, a.id_tag, a.meter_wh, a.at, a.parent_id_tag)
                pending = self.remote_start_profiles.pop(a.connector, None) or \
                    self.remote_start_profiles.pop(a.id_tag, None)
                if pending is not None and now <= pending[1]:
                    self.smart_charging.install_remote_start(a.connector, pending[0])
                else:
                    self._recompute_limits()  # Relative profiles now count from this start
            elif isinstance(a, st.TransactionStopped):
                log.info("connector %d: transaction stopped (%s) at %.0f Wh", a.connector, a.reason,
                         a.meter_wh)
                self.session.transaction_stopped(a.connector, a.meter_wh, a.at, str(a.reason), a.id_tag)
                self.smart_charging.transaction_ended(a.connector)  # its TxProfiles end with it (7.10)
                self._phases_in_use.pop(a.connector, None)
                self._recompute_limits()
            elif isinstance(a, st.StatusChanged):
                log.info("connector %d: status %s%s", a.connector, a.status,
                         f" ({a.error_code}: {a.info})" if a.error_code != "NoError" else "")
                self.session.status_changed(a.connector, str(a.status), a.error_code, a.info, now)
            elif isinstance(a, st.AuthorizationRejected):
                log.info("reader: card %s not accepted (%s)", a.id_tag, a.status)
            elif isinstance(a, st.AvailabilityChanged):
                self.store.set_state(AVAILABILITY.format(a.connector), "Operative" if a.operative else "Inoperative")
            elif isinstance(a, st.UnlockDone):
                self._arm_unlock_timeout(a.connector)
        if any(isinstance(a, st.StatusChanged) for a in actions):
            self._indicate()
        self.client.kick()

    def _indicate(self) -> None:
        """One LED for the whole charger: a fault wins, then charging, then ready; off when unavailable."""
        set_indicator = getattr(self.board, "set_indicator", None)
        if set_indicator is None:
            return
        statuses = {c.status for c in self.station.connectors.values()} | {self.station.cp_status[0]}
        if st.Status.FAULTED in statuses:
            pattern = "fast-blink"
        elif st.Status.CHARGING in statuses:
            pattern = "blink"
        elif statuses <= {st.Status.UNAVAILABLE, None}:
            pattern = "off"
        else:
            pattern = "on"
        set_indicator(pattern)

    # --- Controller port for the OCPP session --------------------------------------------------------------
    def can_remote_start(self, connector: int | None) -> bool:
        return self.station.can_start(connector)

    def remote_start(self, connector: int | None, id_tag: str, charging_profile: dict[str, Any] | None) -> bool:
        ok, actions = self.station.remote_start(connector, id_tag, time.monotonic())
        if ok and charging_profile is not None:
            # Installed when the transaction starts (now, or at plug-in): a TxProfile needs its transaction.
            deadline = time.monotonic() + float(self.keys["ConnectionTimeOut"]) + 1.0
            self.remote_start_profiles[connector or id_tag] = (charging_profile, deadline)
        self._apply(actions)
        return ok

    def remote_stop(self, connector: int) -> None:
        self._apply(self.station.stop(connector, st.StopReason.REMOTE, time.monotonic()))

    def transaction_confirmed(self, connector: int, status: str, parent_id_tag: str | None) -> None:
        if status != "Accepted":
            log.info("connector %d: the CSMS did not accept the idTag (%s); %s", connector, status,
                     "stopping" if bool(self.keys["StopTransactionOnInvalidId"]) else "withholding energy")
        self._apply(self.station.transaction_confirmed(connector, status, parent_id_tag, time.monotonic()))

    def authorization_result(self, id_tag: str, status: str, parent_id_tag: str | None) -> None:
        self._apply(self.station.authorization(id_tag, status, parent_id_tag, time.monotonic()))

    def change_availability(self, connector: int, operative: bool) -> str:
        result, actions = self.station.change_availability(connector, operative, time.monotonic())
        log.info("ChangeAvailability connector %d %s: %s", connector, "Operative" if operative else "Inoperative",
                 result)
        self._apply(actions)
        return result

    @property
    def reset_retries(self) -> int:
        return int(self.keys["ResetRetries"])

    def reset(self, kind: str) -> str:
        if self.reset_requested is not None:
            return "Rejected"  # one is already under way
        log.info("%s reset requested by the CSMS", kind)
        self.reset_requested = kind
        # After this handler returns, so the Reset.conf goes out before the transactions are stopped.
        asyncio.get_running_loop().call_soon(self._stop.set)
        return "Accepted"

    def unlock_connector(self, connector: int, reply: Callable[[str], None]) -> str | None:
        status, actions = self.station.unlock(connector, time.monotonic())
        if status != "Accepted":
            return status
        previous = self._unlock_waiting.pop(connector, None)
        if previous is not None:
            previous[0]("UnlockFailed")  # superseded by this request
        self._unlock_waiting[connector] = (reply, None)
        self._apply(actions)
        return None

    def _arm_unlock_timeout(self, connector: int) -> None:
        waiting = self._unlock_waiting.get(connector)
        if waiting is None or waiting[1] is not None or self._loop is None:
            return
        timer = self._loop.call_later(UNLOCK_TIMEOUT_S, self._unlock_answer, connector, "UnlockFailed")
        self._unlock_waiting[connector] = (waiting[0], timer)

    def _unlock_answer(self, connector: int, status: str) -> None:
        waiting = self._unlock_waiting.get(connector)
        if waiting is None or (waiting[1] is None and status == "Unlocked"):
            return  # no request, or the lock moved for another reason before the unlock was commanded
        del self._unlock_waiting[connector]
        if waiting[1] is not None:
            waiting[1].cancel()
        log.info("connector %d: UnlockConnector: %s", connector, status)
        waiting[0](status)
        self.client.kick()

    def _vendor_data_transfer(self, message_id: str | None, data: str | None) -> tuple[str, str | None]:
        return "Accepted", json.dumps(self.status(), separators=(",", ":"))

    def measurement(self, connector: int) -> Measurement:
        c = self.station.connectors[connector]
        m = self.meters.get(connector)
        phases = self.cfg.hardware.phases
        voltage = m.voltage_v[:phases] if m else (0.0,) * phases
        offered_w = c.pwm_amps * sum(voltage) if c.pwm_amps else 0.0
        return Measurement(c.energy_wh, c.power_w, m.current_a[:phases] if m else (0.0,) * phases, voltage,
                           c.pwm_amps, round(offered_w, 1), m.frequency_hz if m else None)

    def statuses(self) -> dict[int, tuple[str, str, str]]:
        out = {0: (str(self.station.cp_status[0]), self.station.cp_status[1], "")}
        out.update({cid: (str(c.status or st.Status.AVAILABLE), c.error_code, "")
                    for cid, c in self.station.connectors.items()})
        return out

    # --- control socket -----------------------------------------------------------------------------------
    def summary(self) -> str:
        s = self.session
        conn = "online" if s.connected else "offline"
        parts = [f"{c.id}:{c.status or '-'}" for c in self.station.connectors.values()]
        return f"CSMS {conn} ({s.registration or 'not registered'}); connectors {' '.join(parts)}"

    def status(self) -> dict[str, Any]:
        connectors = []
        for cid, c in self.station.connectors.items():
            local_id = self.session.active_transaction(cid)
            row = self.store.transaction(local_id) if local_id is not None else None
            connectors.append({
                "id": cid,
                "status": str(c.status) if c.status else "Unavailable",
                "pilot_state": str(c.pilot),
                "offered_current_a": float(c.pwm_amps),
                "current_limit_a": float(c.offered_a),
                "limit_source": c.limit_source,
                "limits_a": c.limits(),
                "power_w": float(c.power_w),
                "energy_wh": round(float(c.energy_wh), 1),
                "transaction_id": row.csms_tx_id if row else None,
                "id_tag": row.id_tag if row else None,
                "error_code": c.error_code,
                "session_energy_wh": round(c.energy_wh - row.meter_start_wh, 1) if row else None,
            })
        return {
            "charge_point_id": self.cfg.charge_point.id,
            "ocpp": {"connected": self.session.connected, "registration": self.session.registration,
                     "queued_transaction_messages": self.store.queue_length()},
            "connectors": connectors,
        }

    async def handle_request(self, req: dict[str, Any]) -> Any:
        cmd = req["cmd"]
        if cmd == "status":
            return self.status()
        if cmd == "sim":
            return self._sim(req)
        if cmd == "datatransfer":
            return await self._data_transfer_to_csms(req)
        if cmd == "limit":
            return self._local_limit(req)
        if cmd == "schedule":
            return self._schedule(req)
        raise RequestError(f"unknown command {cmd!r}")

    def _local_limit(self, req: dict[str, Any]) -> Any:
        """A limit set on the charger itself (e.g. the site's fuse), kept across restarts."""
        connector, amps = req.get("connector"), req.get("amps")
        n = len(self.station.connectors)
        targets = list(self.station.connectors) if connector in (None, 0) else [connector]
        if not all(isinstance(c, int) and 1 <= c <= n for c in targets):
            raise RequestError(f"connector must be 0..{n}, got {connector!r}")
        if amps is not None and (isinstance(amps, bool) or not isinstance(amps, int | float) or not 0 <= amps <= 80):
            raise RequestError("the limit must be between 0 and 80 A (below 6 A the EV pauses)")
        for cid in targets:
            self.store.set_state(LOCAL_LIMIT.format(cid), "" if amps is None else repr(float(amps)))
            self._apply(self.station.set_local_limit(cid, None if amps is None else float(amps), time.monotonic()))
        return {}

    def _schedule(self, req: dict[str, Any]) -> Any:
        """The composite schedule from now, as GetCompositeSchedule.conf would carry it (without status)."""
        connector, duration, unit = req.get("connector", 1), req.get("duration", 86400), req.get("unit")
        n = len(self.station.connectors)
        if isinstance(connector, bool) or not isinstance(connector, int) or not 0 <= connector <= n:
            raise RequestError(f"connector must be 0..{n}, got {connector!r}")
        if isinstance(duration, bool) or not isinstance(duration, int) or duration < 0:
            raise RequestError(f"duration must be a whole number of seconds >= 0, got {duration!r}")
        if unit not in (None, "A", "W"):
            raise RequestError(f"unit must be A or W, got {unit!r}")
        schedule = self.smart_charging.composite(connector, self.session.wall_datetime(time.monotonic()), duration,
                                                 unit, self.session.transactions())
        return {"connectorId": connector, "scheduleStart": schedule["startSchedule"], "chargingSchedule": schedule}

    async def _data_transfer_to_csms(self, req: dict[str, Any]) -> Any:
        vendor, message_id, data = req.get("vendor_id"), req.get("message_id"), req.get("data")
        if not isinstance(vendor, str) or not 0 < len(vendor) <= 255:
            raise RequestError("vendorId must be 1 to 255 characters")
        if message_id is not None and (not isinstance(message_id, str) or len(message_id) > 50):
            raise RequestError("messageId must be at most 50 characters")
        if data is not None and not isinstance(data, str):
            raise RequestError("data must be a string")
        done: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        def finished(result: dict[str, Any] | None) -> None:
            if not done.done():
                done.set_result(result)

        self.session.send_data_transfer(vendor, message_id, data, time.monotonic(), finished)
        self.client.kick()
        result = await asyncio.wait_for(done, float(self.keys["MessageTimeout"]) + 5)
        if result is None:
            raise RequestError("the CSMS is not reachable or did not answer")
        return result

    def _sim_surface(self) -> Any:
        if isinstance(self.board, SimBoard):
            return self.board
        world = getattr(getattr(self.board, "devices", None), "world", None)
        if world is not None:
            from evsed.board.rpi.emulated_world import EmulatedSim

            return EmulatedSim(world, self.board)
        raise RequestError(f"sim commands need hardware.backend = \"sim\" or an emulated rpi board (this charger "
                           f"runs {self.cfg.hardware.backend!r} on real hardware)")

    def _sim(self, req: dict[str, Any]) -> Any:
        board = self._sim_surface()
        action = req.get("action")
        if action == "swipe":
            tag = req.get("id_tag")
            if not isinstance(tag, str) or not 0 < len(tag) <= 20:
                raise RequestError("idTag must be 1 to 20 characters (OCPP IdToken)")
            board.swipe(tag)
            return {}
        if action == "latency":
            samples = list(board.open_latencies_ns)
            answer: dict[str, Any] = {"open_latencies_ns": samples}
            rpi = getattr(board, "board", None)  # the emulated rpi board: the sampling loop's own figures
            if rpi is not None:
                answer.update(event_to_open_ns=list(rpi.event_to_open_ns), sample_cycles=rpi.sample_cycles,
                              sample_cpu_s=rpi.sample_cpu_s)
            if req.get("reset"):
                board.open_latencies_ns.clear()
                if rpi is not None:
                    rpi.event_to_open_ns.clear()
            return answer
        connector = req.get("connector")
        if not isinstance(connector, int) or not 1 <= connector <= board.connectors:
            raise RequestError(f"connector must be 1..{board.connectors}, got {connector!r}")
        if action == "plug":
            max_current = req.get("max_current", 32.0)
            phases = req.get("phases", 3)
            if not isinstance(max_current, int | float) or not 0 < max_current <= 80:
                raise RequestError("--max-current must be between 0 and 80 A")
            if phases not in (1, 3):
                raise RequestError("--phases must be 1 or 3")
            board.plug(connector, float(max_current), phases)
        elif action == "unplug":
            board.unplug(connector)
        elif action == "suspend":
            board.suspend(connector)
        elif action == "resume":
            board.resume(connector)
        elif action == "fault":
            try:
                board.inject_fault(connector, str(req.get("kind")))
            except ValueError as exc:
                raise RequestError(str(exc)) from None
        elif action == "clear":
            board.clear_faults(connector)
        elif action == "ev":
            return board.ev_snapshot(connector)
        else:
            raise RequestError(f"unknown sim action {action!r}")
        return {}
