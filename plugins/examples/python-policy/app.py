"""An edgepm policy plugin written in Python (componentize-py), to show that the contract is not
Rust-only. Failure above the tenant's threshold; one English alert per device per cool-down,
with the history line from the host; no state kept in the plugin.

Build:  componentize-py -d ../../../wit -w policy componentize app -o policy.wasm
Check:  edgepm plugin check policy.wasm --stage policy
"""
import datetime

import wit_world
from componentize_py_types import Err
from wit_world.imports import history, host
from wit_world.imports.types import Alert, Decision, Severity


def setting(key: str, default: float) -> float:
    value = host.config(key)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise Err(f"setting '{key}' is not a number: {value!r}")


def day(ts_ms: int) -> str:
    return datetime.datetime.fromtimestamp(ts_ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d")


class WitWorld(wit_world.WitWorld):
    def decide(self, device, ts_ms, f, s):
        if s.probability != s.probability:
            raise Err("probability is NaN")
        threshold = setting("threshold", 0.8)
        if s.probability <= threshold:
            return Decision(is_failure=False, alerts=[])
        cooldown_ms = int(setting("cooldown_minutes", 60) * 60_000)
        last = history.last_alert_ms(device)
        if last is not None and 0 <= ts_ms - last < cooldown_ms:
            return Decision(is_failure=True, alerts=[])
        since = history.above_since(device, "vibration_rms", setting("vibration_rms_alarm", 4.5))
        line = f"abnormal vibration since {day(since)}" if since is not None else "no abnormal vibration on record"
        host.log(host.Level.INFO, f"alert for {device} at p={s.probability:.3f}")
        body = f"Failure probability: {s.probability * 100:.1f} %\nHistory: {line}\nModel: {s.model}"
        return Decision(is_failure=True, alerts=[Alert(Severity.WARNING, f"[python] {device} at risk", body)])
