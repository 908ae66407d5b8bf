//! Decoding and validating one telemetry message.
//!
//! Topic `edgepm/<tenant>/<device>/telemetry`; payload a JSON object
//! `{"ts": <epoch ms | RFC 3339>, "seq": <optional int>, "<channel>": <number | [numbers] | burst>, ...}`
//! where a burst that says what it measures is an object: `{"fs_hz": 25600, "unit": "g",
//! "samples": [...]}`, or compact, `"data"` in base64 with `"encoding": "f32le"` (little-endian
//! f32) or `"i16le"` (little-endian i16, times `"scale"`) — a 0.5 s burst at 25.6 kHz in 68 KB
//! (i16) instead of ~130 KB of JSON numbers (`docs/operations.md`, "Topics and payloads"). Optional `"tenant"` and `"device"` fields must agree with the
//! topic. Anything else is a [`Reject`] with a short reason code (a metric label) and a message
//! for the dead-letter topic. Decoding never panics, whatever the bytes.

use crate::topics;
pub use crate::types::{Described, Reading, Samples};
use base64::Engine as _;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Limits a message must respect. Defaults are documented on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload accepted, bytes (default 128 KiB, AWS IoT Core's message limit: a
    /// 4,096-sample burst in JSON is ~40 KB, 16,384 samples as base64 i16 ~44 KB).
    pub max_payload_bytes: usize,
    /// Most channels in one reading (default 32).
    pub max_channels: usize,
    /// Most samples in one channel of one reading (default 16,384: 0.64 s at 25.6 kHz).
    pub max_samples: usize,
    /// How far ahead of the host's clock a timestamp may be, ms (default 5 minutes: clock skew).
    pub max_future_ms: i64,
    /// How far behind the host's clock a timestamp may be, ms (default 7 days: a gateway that
    /// was offline catches up; older data is history to import, not telemetry).
    pub max_age_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 128 * 1024,
            max_channels: 32,
            max_samples: 16_384,
            max_future_ms: 5 * 60_000,
            max_age_ms: 7 * 86_400_000,
        }
    }
}

/// Why a message was rejected. [`Reject::reason`] is a stable, low-cardinality code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    #[error("topic {0:?} is not edgepm/<tenant>/<device>/telemetry")]
    BadTopic(String),
    #[error("payload of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload is not a JSON object")]
    NotObject,
    #[error("payload has no \"ts\"")]
    MissingTimestamp,
    #[error("\"ts\" is neither epoch milliseconds nor an RFC 3339 time: {0}")]
    BadTimestamp(String),
    #[error("\"ts\" {ts_ms} is {ahead_ms} ms ahead of the host clock (limit {limit_ms} ms)")]
    FutureTimestamp { ts_ms: i64, ahead_ms: i64, limit_ms: i64 },
    #[error("\"ts\" {ts_ms} is {age_ms} ms old (limit {limit_ms} ms)")]
    StaleTimestamp { ts_ms: i64, age_ms: i64, limit_ms: i64 },
    #[error("\"seq\" must be an integer")]
    BadSequence,
    #[error("payload says {field} {payload:?} but the topic says {topic:?}")]
    Mismatch { field: &'static str, payload: String, topic: String },
    #[error("{count} channels exceed the limit of {limit}")]
    TooManyChannels { count: usize, limit: usize },
    #[error("channel {channel:?} has {count} samples, the limit is {limit}")]
    TooManySamples { channel: String, count: usize, limit: usize },
    #[error("channel {channel:?} holds a value that is not a finite number: {value}")]
    NotFinite { channel: String, value: String },
    #[error("channel {0:?} must be a number, an array of numbers or a burst object")]
    BadChannel(String),
    #[error("channel {channel:?}: {reason}")]
    BadBurst { channel: String, reason: String },
    #[error("reading has no channels")]
    NoChannels,
    #[error("no tenant {0:?} is deployed on this host")]
    UnknownTenant(String),
    #[error("asset metadata must be a JSON object of strings or numbers: {0}")]
    BadAsset(String),
}

impl Reject {
    /// Code for the `reason` label of the rejected-readings metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::BadTopic(_) => "bad_topic",
            Reject::TooLarge { .. } => "too_large",
            Reject::NotJson(_) | Reject::NotObject => "malformed",
            Reject::MissingTimestamp | Reject::BadTimestamp(_) => "bad_timestamp",
            Reject::FutureTimestamp { .. } => "future_timestamp",
            Reject::StaleTimestamp { .. } => "stale_timestamp",
            Reject::BadSequence => "bad_sequence",
            Reject::Mismatch { .. } => "topic_mismatch",
            Reject::TooManyChannels { .. } | Reject::TooManySamples { .. } => "too_many_values",
            Reject::NotFinite { .. } => "not_finite",
            Reject::BadChannel(_) | Reject::NoChannels => "bad_channel",
            Reject::BadBurst { .. } => "bad_burst",
            Reject::UnknownTenant(_) => "unknown_tenant",
            Reject::BadAsset(_) => "bad_asset",
        }
    }
}

/// `edgepm/<tenant>/<device>/telemetry` → (tenant, device). Levels are plain names: letters,
/// digits, `-`, `_`, `.`, at most 64 bytes (see [`crate::topics`]).
pub fn parse_topic(topic: &str) -> Result<(&str, &str), Reject> {
    topics::parse_device(topic, topics::TELEMETRY)
        .ok_or_else(|| Reject::BadTopic(topic.chars().take(200).collect()))
}

/// `(tenant, device)` of an asset metadata topic, `edgepm/<tenant>/<device>/asset`.
pub fn parse_asset_topic(topic: &str) -> Option<(&str, &str)> {
    topics::parse_device(topic, topics::ASSET)
}

/// Decodes asset metadata: a JSON object of at most 32 strings or numbers, e.g.
/// `{"model": "WEG W22 15 kW", "install_date": "2019-03-12", "site": "Plant A"}`.
pub fn decode_asset(payload: &[u8]) -> Result<Vec<(String, String)>, Reject> {
    const MAX_ATTRIBUTES: usize = 32;
    const MAX_BYTES: usize = 8 * 1024;
    if payload.len() > MAX_BYTES {
        return Err(Reject::TooLarge { size: payload.len(), limit: MAX_BYTES });
    }
    let value: Value = serde_json::from_slice(payload).map_err(|e| Reject::NotJson(e.to_string()))?;
    let Value::Object(fields) = value else { return Err(Reject::NotObject) };
    if fields.len() > MAX_ATTRIBUTES {
        return Err(Reject::BadAsset(format!("{} attributes, the limit is {MAX_ATTRIBUTES}", fields.len())));
    }
    fields
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            Value::Number(n) => Ok((k, n.to_string())),
            other => Err(Reject::BadAsset(format!("{k:?} is {other}"))),
        })
        .collect()
}

/// Decodes the message `payload` received on `topic`, with `now_ms` as the host's clock.
pub fn decode(topic: &str, payload: &[u8], limits: &Limits, now_ms: i64) -> Result<Reading, Reject> {
    let (tenant, device) = addressed(topic, payload, limits)?;
    if let Some(reading) = fast::decode(tenant, device, payload, limits, now_ms) {
        return Ok(reading);
    }
    general(tenant, device, payload, limits, now_ms)
}

/// [`decode`] without its fast path: what the general path alone makes of the message. The fast
/// path must agree with it whenever it decodes a message at all — the property the fuzz target
/// `decode` and the tests check.
pub fn decode_general(topic: &str, payload: &[u8], limits: &Limits, now_ms: i64) -> Result<Reading, Reject> {
    let (tenant, device) = addressed(topic, payload, limits)?;
    general(tenant, device, payload, limits, now_ms)
}

/// (tenant, device) of a telemetry message whose payload is within the size limit.
fn addressed<'a>(topic: &'a str, payload: &[u8], limits: &Limits) -> Result<(&'a str, &'a str), Reject> {
    let address = parse_topic(topic)?;
    if payload.len() > limits.max_payload_bytes {
        return Err(Reject::TooLarge { size: payload.len(), limit: limits.max_payload_bytes });
    }
    Ok(address)
}

fn general(
    tenant: &str,
    device: &str,
    payload: &[u8],
    limits: &Limits,
    now_ms: i64,
) -> Result<Reading, Reject> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| Reject::NotJson(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(Reject::NotObject);
    };
    let ts_ms = timestamp(fields.get("ts").ok_or(Reject::MissingTimestamp)?)?;
    // Saturating: a device may send any i64, and an overflow must not panic.
    let (ahead_ms, age_ms) = (ts_ms.saturating_sub(now_ms), now_ms.saturating_sub(ts_ms));
    if ahead_ms > limits.max_future_ms {
        return Err(Reject::FutureTimestamp { ts_ms, ahead_ms, limit_ms: limits.max_future_ms });
    }
    if age_ms > limits.max_age_ms {
        return Err(Reject::StaleTimestamp { ts_ms, age_ms, limit_ms: limits.max_age_ms });
    }
    let seq = match fields.get("seq") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or(Reject::BadSequence)?),
    };
    let mut channels = Vec::new();
    let mut described = Vec::new();
    for (key, value) in &fields {
        match key.as_str() {
            "ts" | "seq" => continue,
            "tenant" | "device" => {
                let expected = if key == "tenant" { tenant } else { device };
                if value.as_str() != Some(expected) {
                    return Err(Reject::Mismatch {
                        field: if key == "tenant" { "tenant" } else { "device" },
                        payload: value.to_string().chars().take(100).collect(),
                        topic: expected.to_string(),
                    });
                }
                continue;
            }
            _ => {}
        }
        if channels.len() == limits.max_channels {
            return Err(Reject::TooManyChannels { count: fields.len(), limit: limits.max_channels });
        }
        match value {
            Value::Object(burst) => {
                let (samples, d) = described_burst(key, burst, limits)?;
                channels.push((key.clone(), samples));
                described.push(d);
            }
            _ => channels.push((key.clone(), samples(key, value, limits)?)),
        }
    }
    if channels.is_empty() {
        return Err(Reject::NoChannels);
    }
    Ok(Reading { tenant: tenant.to_string(), device: device.to_string(), ts_ms, seq, channels, described })
}

/// Longest unit accepted, bytes.
const MAX_UNIT_BYTES: usize = 16;

/// A burst object: `fs_hz` and `unit` (each optional), and either `samples` (an array of
/// numbers) or `data` (base64) with `encoding` `f32le` or `i16le` (and `scale` for i16).
fn described_burst(
    channel: &str,
    o: &serde_json::Map<String, Value>,
    limits: &Limits,
) -> Result<(Samples, Described), Reject> {
    let bad = |reason: String| Reject::BadBurst { channel: channel.to_string(), reason };
    if let Some(k) =
        o.keys().find(|k| !["fs_hz", "unit", "samples", "data", "encoding", "scale"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "unknown key {:?} (fs_hz, unit, samples, data, encoding, scale)",
            k.chars().take(64).collect::<String>()
        )));
    }
    let fs_hz = match o.get("fs_hz") {
        None => None,
        Some(v) => match v.as_f64() {
            Some(f) if f > 0.0 && f.is_finite() && f <= 10_000_000.0 => Some(f),
            _ => return Err(bad(format!("fs_hz must be a positive number of samples per second, got {v}"))),
        },
    };
    let unit = match o.get("unit") {
        None => None,
        Some(Value::String(u))
            if !u.is_empty() && u.len() <= MAX_UNIT_BYTES && !u.chars().any(char::is_control) =>
        {
            Some(u.clone())
        }
        Some(v) => {
            return Err(bad(format!(
                "unit must be a short text (at most {MAX_UNIT_BYTES} bytes), got {}",
                v.to_string().chars().take(64).collect::<String>()
            )));
        }
    };
    let samples = match (o.get("samples"), o.get("data")) {
        (Some(v @ Value::Array(_)), None) => match samples(channel, v, limits)? {
            burst @ Samples::Burst(_) => burst,
            Samples::Scalar(_) => return Err(Reject::BadChannel(channel.to_string())),
        },
        (None, Some(Value::String(data))) => Samples::Burst(decode_data(o, data, limits).map_err(bad)?),
        (Some(_), Some(_)) => return Err(bad("has both samples and data".into())),
        _ => return Err(bad("needs samples (an array) or data (base64 text)".into())),
    };
    if let Samples::Burst(xs) = &samples
        && let Some(x) = xs.iter().find(|x| !x.is_finite())
    {
        return Err(Reject::NotFinite { channel: channel.to_string(), value: x.to_string() });
    }
    Ok((samples, Described { channel: channel.to_string(), fs_hz, unit }))
}

/// The samples of a burst's base64 `data` in its `encoding`.
fn decode_data(o: &serde_json::Map<String, Value>, data: &str, limits: &Limits) -> Result<Vec<f32>, String> {
    let width = match o.get("encoding").and_then(Value::as_str) {
        Some("f32le") => 4,
        Some("i16le") => 2,
        Some(other) => {
            return Err(format!(
                "encoding {:?} is not f32le or i16le",
                other.chars().take(32).collect::<String>()
            ));
        }
        None => return Err("data needs an encoding (f32le or i16le)".into()),
    };
    // Checked before decoding: the decoded size is known from the text's length.
    let count = data.len() / 4 * 3 / width;
    if count > limits.max_samples + 1 {
        return Err(format!("data holds about {count} samples, the limit is {}", limits.max_samples));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("data is not base64: {e}"))?;
    if bytes.is_empty() || bytes.len() % width != 0 {
        return Err(format!(
            "data decodes to {} bytes, not a whole number of {width}-byte samples",
            bytes.len()
        ));
    }
    if bytes.len() / width > limits.max_samples {
        return Err(format!(
            "data holds {} samples, the limit is {}",
            bytes.len() / width,
            limits.max_samples
        ));
    }
    if width == 4 {
        if o.contains_key("scale") {
            return Err("scale applies to i16le only".into());
        }
        return Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect());
    }
    let scale = match o.get("scale") {
        None => 1.0,
        Some(v) => match v.as_f64() {
            Some(s) if s.is_finite() && s != 0.0 => s,
            _ => return Err(format!("scale must be a finite non-zero number, got {v}")),
        },
    };
    Ok(bytes.chunks_exact(2).map(|b| (i16::from_le_bytes([b[0], b[1]]) as f64 * scale) as f32).collect())
}

fn timestamp(v: &Value) -> Result<i64, Reject> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| Reject::BadTimestamp(n.to_string())),
        Value::String(s) => OffsetDateTime::parse(s, &Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .map_err(|_| Reject::BadTimestamp(s.chars().take(64).collect())),
        other => Err(Reject::BadTimestamp(other.to_string().chars().take(64).collect())),
    }
}

fn number(channel: &str, v: &Value) -> Result<f32, Reject> {
    let x = v.as_f64().ok_or_else(|| Reject::BadChannel(channel.to_string()))?;
    let y = x as f32;
    if y.is_finite() {
        Ok(y)
    } else {
        Err(Reject::NotFinite { channel: channel.to_string(), value: x.to_string() })
    }
}

fn samples(channel: &str, v: &Value, limits: &Limits) -> Result<Samples, Reject> {
    match v {
        Value::Number(_) => number(channel, v).map(Samples::Scalar),
        Value::Array(items) => {
            if items.len() > limits.max_samples {
                return Err(Reject::TooManySamples {
                    channel: channel.to_string(),
                    count: items.len(),
                    limit: limits.max_samples,
                });
            }
            if items.is_empty() {
                return Err(Reject::BadChannel(channel.to_string()));
            }
            items.iter().map(|x| number(channel, x)).collect::<Result<_, _>>().map(Samples::Burst)
        }
        _ => Err(Reject::BadChannel(channel.to_string())),
    }
}

/// The common case without a `serde_json::Value` tree: the payload's fields are read straight
/// into numbers and sample vectors (a third of the decoding time at 10k readings/s). Anything
/// unusual — a reject of any kind, escaped or repeated keys, other value types — returns `None`
/// and the general path above decodes the message again, so it alone decides what is rejected
/// and why.
mod fast {
    use super::{Limits, Reading, Samples};
    use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    enum Field<'a> {
        Int(i64),
        Float(f64),
        Str(&'a str),
        Null,
        Burst(Vec<f32>),
        /// Anything else: the general path decides.
        Other,
    }

    struct FieldVisitor;

    impl<'de> Visitor<'de> for FieldVisitor {
        type Value = Field<'de>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a telemetry field")
        }
        fn visit_i64<E>(self, v: i64) -> Result<Field<'de>, E> {
            Ok(Field::Int(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Field<'de>, E> {
            Ok(i64::try_from(v).map_or(Field::Other, Field::Int))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Field<'de>, E> {
            Ok(Field::Float(v))
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'de>, E> {
            Ok(Field::Str(v))
        }
        fn visit_str<E>(self, _: &str) -> Result<Field<'de>, E> {
            Ok(Field::Other) // escaped: not borrowed
        }
        fn visit_unit<E>(self) -> Result<Field<'de>, E> {
            Ok(Field::Null)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Field<'de>, E> {
            Ok(Field::Other)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
            let mut samples = Vec::with_capacity(seq.size_hint().unwrap_or(64));
            // A non-number fails the whole fast path: the general path names the channel.
            while let Some(x) = seq.next_element::<f64>()? {
                samples.push(x as f32);
            }
            Ok(Field::Burst(samples))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Field::Other)
        }
    }

    impl<'de> serde::Deserialize<'de> for Field<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(FieldVisitor)
        }
    }

    struct Fields<'a>(Vec<(&'a str, Field<'a>)>);

    impl<'de> serde::Deserialize<'de> for Fields<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Fields<'de>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                    let mut fields = Vec::with_capacity(8);
                    while let Some(key) = map.next_key::<&'de str>()? {
                        fields.push((key, map.next_value::<Field<'de>>()?));
                    }
                    Ok(Fields(fields))
                }
            }
            d.deserialize_map(V)
        }
    }

    pub(super) fn decode(
        tenant: &str,
        device: &str,
        payload: &[u8],
        limits: &Limits,
        now_ms: i64,
    ) -> Option<Reading> {
        let Fields(mut fields) = serde_json::from_slice(payload).ok()?;
        fields.sort_by(|a, b| a.0.cmp(b.0));
        if fields.windows(2).any(|w| w[0].0 == w[1].0) {
            return None; // repeated keys: the general path keeps the last one
        }
        let (mut ts_ms, mut seq) = (None, None);
        let mut channels = Vec::with_capacity(fields.len());
        for (key, field) in fields {
            match (key, field) {
                ("ts", Field::Int(ms)) => ts_ms = Some(ms),
                ("ts", Field::Str(s)) => {
                    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339);
                    ts_ms = Some((t.ok()?.unix_timestamp_nanos() / 1_000_000) as i64);
                }
                ("seq", Field::Int(n)) => seq = Some(n),
                ("seq", Field::Null) => {}
                ("tenant", Field::Str(s)) if s == tenant => {}
                ("device", Field::Str(s)) if s == device => {}
                ("ts" | "seq" | "tenant" | "device", _) => return None,
                (name, Field::Int(x)) => channels.push((name.to_string(), Samples::Scalar(x as f64 as f32))),
                (name, Field::Float(x)) => channels.push((name.to_string(), Samples::Scalar(x as f32))),
                (name, Field::Burst(v)) if !v.is_empty() && v.len() <= limits.max_samples => {
                    channels.push((name.to_string(), Samples::Burst(v)))
                }
                _ => return None,
            }
        }
        let ts_ms = ts_ms?;
        let finite = |s: &Samples| match s {
            Samples::Scalar(x) => x.is_finite(),
            Samples::Burst(v) => v.iter().all(|x| x.is_finite()),
        };
        let fresh = ts_ms.saturating_sub(now_ms) <= limits.max_future_ms
            && now_ms.saturating_sub(ts_ms) <= limits.max_age_ms;
        let ok = fresh
            && !channels.is_empty()
            && channels.len() <= limits.max_channels
            && channels.iter().all(|(_, s)| finite(s));
        ok.then(|| Reading {
            tenant: tenant.to_string(),
            device: device.to_string(),
            ts_ms,
            seq,
            channels,
            described: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_743_849_000_000; // 2025-04-05T10:30:00Z
    const TOPIC: &str = "edgepm/acme/MTR-042/telemetry";

    fn ok(payload: &str) -> Reading {
        decode(TOPIC, payload.as_bytes(), &Limits::default(), NOW).expect("accepted")
    }

    fn reason(topic: &str, payload: &[u8]) -> &'static str {
        decode(topic, payload, &Limits::default(), NOW).expect_err("rejected").reason()
    }

    #[test]
    fn canonical_payload_in_both_timestamp_forms() {
        let r = ok(
            r#"{"ts":"2025-04-05T10:30:00Z","vibration":[0.12,-0.31,0.5],"temperature":71.3,"current":12.1}"#,
        );
        assert_eq!((r.tenant.as_str(), r.device.as_str(), r.ts_ms, r.seq), ("acme", "MTR-042", NOW, None));
        assert_eq!(r.channels[0], ("current".to_string(), Samples::Scalar(12.1)));
        assert_eq!(r.channels[1], ("temperature".to_string(), Samples::Scalar(71.3)));
        assert_eq!(r.channels[2], ("vibration".to_string(), Samples::Burst(vec![0.12, -0.31, 0.5])));
        let r = ok(&format!(r#"{{"ts":{},"seq":7,"temperature":70}}"#, NOW - 1500));
        assert_eq!((r.ts_ms, r.seq), (NOW - 1500, Some(7)));
        assert_eq!(ok(r#"{"ts":"2025-04-05T12:30:00.250+02:00","x":1}"#).ts_ms, NOW + 250);
    }

    #[test]
    fn malformed_payloads_are_rejected_with_a_reason() {
        let huge_array = format!(r#"{{"ts":{NOW},"vibration":[{}]}}"#, vec!["0.1"; 20_000].join(","));
        let many_channels = format!(
            r#"{{"ts":{NOW},{}}}"#,
            (0..40).map(|i| format!(r#""c{i}":1"#)).collect::<Vec<_>>().join(",")
        );
        let garbage: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (TOPIC, br#"{"ts":1743849000000,"vibration":[0.1,"#.to_vec(), "malformed"),
            (TOPIC, b"[1,2,3]".to_vec(), "malformed"),
            (TOPIC, br#"{"vibration":[0.1]}"#.to_vec(), "bad_timestamp"),
            (TOPIC, br#"{"ts":"yesterday","x":1}"#.to_vec(), "bad_timestamp"),
            (TOPIC, br#"{"ts":true,"x":1}"#.to_vec(), "bad_timestamp"),
            (TOPIC, br#"{"ts":1.5e300,"x":1}"#.to_vec(), "bad_timestamp"),
            (TOPIC, br#"{"ts":"2125-04-05T10:30:00Z","x":1}"#.to_vec(), "future_timestamp"),
            (TOPIC, br#"{"ts":0,"x":1}"#.to_vec(), "stale_timestamp"),
            (TOPIC, br#"{"ts":-9223372036854775808,"x":1}"#.to_vec(), "stale_timestamp"),
            (TOPIC, br#"{"ts":9223372036854775807,"x":1}"#.to_vec(), "future_timestamp"),
            (TOPIC, format!(r#"{{"ts":{NOW},"seq":"one","x":1}}"#).into_bytes(), "bad_sequence"),
            (TOPIC, format!(r#"{{"ts":{NOW},"vibration":"high"}}"#).into_bytes(), "bad_channel"),
            (TOPIC, format!(r#"{{"ts":{NOW},"vibration":[0.1,null]}}"#).into_bytes(), "bad_channel"),
            (TOPIC, format!(r#"{{"ts":{NOW},"vibration":[]}}"#).into_bytes(), "bad_channel"),
            (TOPIC, format!(r#"{{"ts":{NOW}}}"#).into_bytes(), "bad_channel"),
            (TOPIC, format!(r#"{{"ts":{NOW},"temperature":NaN}}"#).into_bytes(), "malformed"),
            (TOPIC, format!(r#"{{"ts":{NOW},"temperature":1e39}}"#).into_bytes(), "not_finite"),
            (TOPIC, huge_array.into_bytes(), "too_many_values"),
            (TOPIC, many_channels.into_bytes(), "too_many_values"),
            (TOPIC, format!(r#"{{"ts":{NOW},"tenant":"other","x":1}}"#).into_bytes(), "topic_mismatch"),
            (TOPIC, format!(r#"{{"ts":{NOW},"device":"MTR-1","x":1}}"#).into_bytes(), "topic_mismatch"),
            ("edgepm/acme/telemetry", format!(r#"{{"ts":{NOW},"x":1}}"#).into_bytes(), "bad_topic"),
            ("edgepm/acme/MTR 1/telemetry", format!(r#"{{"ts":{NOW},"x":1}}"#).into_bytes(), "bad_topic"),
            ("edgepm/+/MTR-1/telemetry", format!(r#"{{"ts":{NOW},"x":1}}"#).into_bytes(), "bad_topic"),
            (TOPIC, garbage, "too_large"),
            (TOPIC, vec![0xff, 0xfe, 0x00], "malformed"),
        ];
        for (topic, payload, want) in cases {
            let preview = String::from_utf8_lossy(&payload[..payload.len().min(60)]).to_string();
            assert_eq!(reason(topic, &payload), want, "{topic} {preview}");
        }
    }

    #[test]
    fn matching_tenant_and_device_fields_are_accepted() {
        let r = ok(&format!(r#"{{"ts":{NOW},"tenant":"acme","device":"MTR-042","x":1}}"#));
        assert_eq!(r.channels, vec![("x".to_string(), Samples::Scalar(1.0))]);
    }

    #[test]
    fn a_burst_says_what_it_measures_in_any_of_three_encodings() {
        use base64::Engine as _;
        let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
        let xs = [0.5f32, -0.25, 1.0];
        let f32le = b64(xs.iter().flat_map(|x| x.to_le_bytes()).collect());
        let i16le = b64([500i16, -250, 1000].iter().flat_map(|x| x.to_le_bytes()).collect());
        for burst in [
            r#"{"fs_hz":25600,"unit":"g","samples":[0.5,-0.25,1]}"#.to_string(),
            format!(r#"{{"fs_hz":25600,"unit":"g","encoding":"f32le","data":"{f32le}"}}"#),
            format!(r#"{{"fs_hz":25600,"unit":"g","encoding":"i16le","scale":0.001,"data":"{i16le}"}}"#),
        ] {
            let r = ok(&format!(r#"{{"ts":{NOW},"temperature":60,"vibration":{burst}}}"#));
            assert_eq!(r.channels[1], ("vibration".to_string(), Samples::Burst(xs.to_vec())), "{burst}");
            assert_eq!(
                r.described,
                vec![Described {
                    channel: "vibration".into(),
                    fs_hz: Some(25_600.0),
                    unit: Some("g".into())
                }]
            );
        }
        // Sample rate and unit are each optional; a bare array still works and describes nothing.
        let r = ok(&format!(r#"{{"ts":{NOW},"vibration":{{"samples":[1,2]}}}}"#));
        assert_eq!(r.described, vec![Described { channel: "vibration".into(), fs_hz: None, unit: None }]);
        assert!(ok(&format!(r#"{{"ts":{NOW},"vibration":[1,2]}}"#)).described.is_empty());
    }

    #[test]
    fn a_bad_burst_object_is_refused_with_its_reason() {
        let limits = Limits { max_samples: 4, ..Limits::default() };
        let refused = |burst: &str| {
            let p = format!(r#"{{"ts":{NOW},"vibration":{burst}}}"#);
            let e = decode(TOPIC, p.as_bytes(), &limits, NOW).expect_err(burst);
            (e.reason(), e.to_string())
        };
        for (burst, says) in [
            (r#"{"fs_hz":0,"samples":[1]}"#, "fs_hz must be a positive"),
            (r#"{"fs_hz":"fast","samples":[1]}"#, "fs_hz"),
            (r#"{"unit":"a very long unit name indeed","samples":[1]}"#, "unit must be a short text"),
            (r#"{"samples":[1],"data":"AAAA","encoding":"f32le"}"#, "both samples and data"),
            (r#"{"fs_hz":100}"#, "needs samples"),
            (r#"{"samples":[1],"gain":2}"#, "unknown key \"gain\""),
            (r#"{"data":"AAAA"}"#, "needs an encoding"),
            (r#"{"data":"AAAA","encoding":"f64le"}"#, "not f32le or i16le"),
            (r#"{"data":"!!!!","encoding":"f32le"}"#, "not base64"),
            (r#"{"data":"AAAA","encoding":"f32le"}"#, "not a whole number"),
            (r#"{"data":"AAAAAAAAAAAAAAAAAAAAAAAAAAAA","encoding":"i16le"}"#, "the limit is 4"),
            (r#"{"data":"AAAAAA==","encoding":"i16le","scale":0}"#, "scale must be"),
            (r#"{"data":"AAAAAA==","encoding":"f32le","scale":2}"#, "scale applies to i16le only"),
            (r#"{"data":"AACAfw==","encoding":"f32le"}"#, "not a finite number"),
        ] {
            let (reason, message) = refused(burst);
            assert!(message.contains(says), "{burst}: {message}");
            assert!(["bad_burst", "not_finite"].contains(&reason), "{burst}: {reason}");
        }
        assert_eq!(refused(r#"{"samples":[1,2,3,4,5]}"#).0, "too_many_values");
        assert_eq!(refused(r#"{"samples":7}"#).0, "bad_burst");
    }

    /// The general path alone (what `decode` did before the fast path).
    fn general(topic: &str, payload: &[u8], limits: &Limits) -> Result<Reading, Reject> {
        decode_general(topic, payload, limits, NOW)
    }

    #[test]
    fn the_fast_path_accepts_exactly_what_the_general_path_accepts() {
        let limits = Limits::default();
        let payloads = [
            format!(
                r#"{{"ts":{NOW},"vibration":[0.12,-0.31,5e-3,1E2,-0,7],"temperature":71.3,"current":12}}"#
            ),
            r#"{"ts":"2025-04-05T10:30:00Z","seq":null,"z":1,"a":[1,2]}"#.to_string(),
            format!(r#"{{"ts":{NOW},"seq":3,"tenant":"acme","device":"MTR-042","x":-1.5}}"#),
            format!(r#"{{"ts":{NOW},"x":1,"x":2}}"#),
            format!(r#"{{"ts":{NOW},"x":18446744073709551615}}"#),
            format!(r#"{{"ts":{NOW},"x":3.4028236e38}}"#),
            format!(r#"{{"ts":{NOW},"x":[1,[2]]}}"#),
            format!(r#"{{"ts":{NOW},"x":{{"y":1}}}}"#),
            format!(r#"{{"ts":{NOW},"x":"1"}}"#),
            format!(r#"{{"ts":{NOW}.0,"x":1}}"#),
            format!(r#"{{"ts":{NOW},"seq":1.5,"x":1}}"#),
            format!(r#"{{"ts":{NOW},"tenant":"ACME","x":1}}"#),
        ];
        for p in &payloads {
            let fast = fast::decode("acme", "MTR-042", p.as_bytes(), &limits, NOW);
            let general = general(TOPIC, p.as_bytes(), &limits);
            match (&fast, &general) {
                (Some(f), Ok(g)) => assert_eq!(f, g, "{p}"),
                (Some(f), Err(e)) => panic!("fast path accepted {p} as {f:?}, the general path says {e}"),
                (None, _) => {}
            }
            assert_eq!(decode(TOPIC, p.as_bytes(), &limits, NOW), general, "{p}");
        }
        // The canonical payload takes the fast path.
        assert!(fast::decode("acme", "MTR-042", payloads[0].as_bytes(), &limits, NOW).is_some());
        assert!(fast::decode("acme", "MTR-042", payloads[1].as_bytes(), &limits, NOW).is_some());
    }

    /// A JSON value of the shapes a payload field takes, and some it should not.
    fn field_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<f64>().prop_map(|x| x.to_string()),
            any::<i64>().prop_map(|x| x.to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            "[a-z0-9 ]{0,8}".prop_map(|s| format!("{s:?}")),
            proptest::collection::vec(any::<f32>(), 0..20)
                .prop_map(|v| format!("[{}]", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","))),
            Just(format!("{NOW}")),
            Just("\"2025-04-05T10:30:00Z\"".to_string()),
        ]
    }

    proptest::proptest! {
        /// Any bytes on any topic: decoding never panics, and a reject always names its reason.
        #[test]
        fn arbitrary_bytes_never_panic_and_every_reject_has_a_reason(
            topic in "(edgepm|x)/[a-zA-Z0-9+#/ -]{0,10}/[a-zA-Z0-9+#/ -]{0,10}/(telemetry|asset)",
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            if let Err(r) = decode(&topic, &payload, &Limits::default(), NOW) {
                proptest::prop_assert!(!r.reason().is_empty() && !r.to_string().is_empty());
            }
            if let Err(r) = decode_asset(&payload) {
                proptest::prop_assert!(!r.reason().is_empty());
            }
        }

        /// JSON objects with the payload's field names and values of every shape: what the fast
        /// path accepts, the general path accepts the same way; nothing panics; an accepted
        /// reading has only finite samples.
        #[test]
        fn json_shaped_payloads_decode_the_same_on_both_paths(
            fields in proptest::collection::vec(
                (proptest::sample::select(vec!["ts", "seq", "vibration", "temperature", "current", "tenant", "device", "x"]), field_value()),
                0..6,
            ),
        ) {
            let body = fields.iter().map(|(k, v)| format!("{k:?}:{v}")).collect::<Vec<_>>().join(",");
            let payload = format!("{{{body}}}");
            let limits = Limits::default();
            if let Some(fast) = fast::decode("acme", "MTR-042", payload.as_bytes(), &limits, NOW) {
                proptest::prop_assert_eq!(Ok(fast), general(TOPIC, payload.as_bytes(), &limits));
            }
            match decode(TOPIC, payload.as_bytes(), &limits, NOW) {
                Ok(r) => {
                    for (_, samples) in &r.channels {
                        let finite = match samples {
                            Samples::Scalar(x) => x.is_finite(),
                            Samples::Burst(v) => v.iter().all(|x| x.is_finite()),
                        };
                        proptest::prop_assert!(finite, "{}", payload);
                    }
                }
                Err(r) => proptest::prop_assert!(!r.reason().is_empty()),
            }
        }
    }
}
