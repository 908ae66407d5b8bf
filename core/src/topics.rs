//! The topic grammar, in one place: `edgepm/<tenant>/<device>/<leaf>` for what concerns one
//! device, `edgepm/<tenant>/<leaf>` for what concerns a tenant. Tenant and device names are plain
//! names ([`is_name`]), so a topic is never ambiguous and never holds an MQTT wildcard.

/// First level of every topic.
pub const ROOT: &str = "edgepm";
/// Readings of a device, from the device.
pub const TELEMETRY: &str = "telemetry";
/// Asset metadata of a device (retained), from the device or its registry.
pub const ASSET: &str = "asset";
/// A window's prediction, from the host.
pub const PREDICTION: &str = "prediction";
/// An alert, from the host.
pub const ALERT: &str = "alert";
/// A refused message of a tenant, from the host (`edgepm/<tenant>/deadletter`).
pub const DEAD_LETTER: &str = "deadletter";

/// Every device's telemetry (the host's subscription).
pub const TELEMETRY_FILTER: &str = "edgepm/+/+/telemetry";
/// Every device's asset metadata.
pub const ASSET_FILTER: &str = "edgepm/+/+/asset";

/// `edgepm/<tenant>/<device>/<leaf>`.
pub fn device(tenant: &str, device: &str, leaf: &str) -> String {
    format!("{ROOT}/{tenant}/{device}/{leaf}")
}

/// `edgepm/<tenant>/<leaf>`.
pub fn tenant(tenant: &str, leaf: &str) -> String {
    format!("{ROOT}/{tenant}/{leaf}")
}

/// `edgepm/<tenant>/+/<leaf>`: one leaf of every device of a tenant.
pub fn tenant_filter(tenant: &str, leaf: &str) -> String {
    format!("{ROOT}/{tenant}/+/{leaf}")
}

/// `(tenant, device)` of `edgepm/<tenant>/<device>/<leaf>`, both plain names; `None` for any
/// other topic.
pub fn parse_device<'a>(topic: &'a str, leaf: &str) -> Option<(&'a str, &'a str)> {
    let mut levels = topic.split('/');
    match (levels.next(), levels.next(), levels.next(), levels.next(), levels.next()) {
        (Some(ROOT), Some(tenant), Some(device), Some(l), None)
            if l == leaf && is_name(tenant) && is_name(device) =>
        {
            Some((tenant, device))
        }
        _ => None,
    }
}

/// A tenant or device name: 1–64 bytes of letters, digits, `-`, `_` and `.`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_built_and_parsed_by_one_grammar() {
        let t = device("acme", "MTR-042", TELEMETRY);
        assert_eq!(t, "edgepm/acme/MTR-042/telemetry");
        assert_eq!(parse_device(&t, TELEMETRY), Some(("acme", "MTR-042")));
        assert_eq!(parse_device(&t, ASSET), None, "another leaf");
        assert_eq!(parse_device("edgepm/acme/+/telemetry", TELEMETRY), None, "a wildcard is no name");
        assert_eq!(parse_device("edgepm/acme/a/b/telemetry", TELEMETRY), None);
        assert_eq!(tenant("acme", DEAD_LETTER), "edgepm/acme/deadletter");
        assert_eq!(tenant_filter("acme", PREDICTION), "edgepm/acme/+/prediction");
        assert!(!is_name(&"x".repeat(65)));
        assert!(!is_name("a b"));
    }
}
