//! Alert e-mails as RFC 5322 messages (UTF-8 subject as RFC 2047 encoded words, UTF-8 body,
//! CRLF line endings), written as `.eml` files a mail relay or a person can pick up. The same
//! rendering would feed an SMTP or SES sink.

use crate::pipeline::WindowOutcome;
use crate::types::{Alert, Severity};
use base64::Engine as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// Sender of alert e-mails.
pub const FROM: &str = "edgepm <edgepm@localhost>";
/// Longest body line before it is wrapped (RFC 5322 allows 998 octets).
const MAX_LINE: usize = 900;

/// A rendered alert e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// `<ts_ms>+<tenant>+<device>+<index>.eml`: unique per alert, so a retry rewrites the same
    /// file. `+` is in neither a tenant nor a device name (`-` is in both: `a`/`b-c` and `a-b`/`c`
    /// must not share a file).
    pub file_name: String,
    pub message: String,
}

/// Renders alert number `index` of a window's decision, addressed to `to` (the tenant's
/// `[alerts] email` list; none gives `undisclosed-recipients:;`).
pub fn render(o: &WindowOutcome, index: usize, alert: &Alert, to: &[String], now_ms: i64) -> Email {
    let date = OffsetDateTime::from_unix_timestamp_nanos(now_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc2822).ok())
        .unwrap_or_default();
    let to = if to.is_empty() { "undisclosed-recipients:;".to_string() } else { to.join(", ") };
    let severity = match alert.severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    };
    let mut m = String::new();
    let mut header = |name: &str, value: &str| {
        m.push_str(name);
        m.push_str(": ");
        m.push_str(&value.replace(['\r', '\n'], " "));
        m.push_str("\r\n");
    };
    header("From", FROM);
    header("To", &to);
    m.push_str("Subject: ");
    m.push_str(&encode_subject(&alert.subject));
    m.push_str("\r\n");
    let mut header = |name: &str, value: &str| {
        m.push_str(name);
        m.push_str(": ");
        m.push_str(&value.replace(['\r', '\n'], " "));
        m.push_str("\r\n");
    };
    header("Date", &date);
    header("Message-ID", &format!("<{}.{}.{}.{}@edgepm>", o.end_ms, index, o.device, o.tenant));
    header("MIME-Version", "1.0");
    header("Content-Type", "text/plain; charset=UTF-8");
    header("Content-Transfer-Encoding", "8bit");
    header("X-Edgepm-Tenant", &o.tenant);
    header("X-Edgepm-Device", &o.device);
    header("X-Edgepm-Severity", severity);
    header("X-Edgepm-Probability", &format!("{:.4}", o.score.probability));
    m.push_str("\r\n");
    for line in alert.body.lines() {
        for piece in wrap(line, MAX_LINE) {
            m.push_str(piece);
            m.push_str("\r\n");
        }
    }
    let file_name = format!("{}+{}+{}+{}.eml", o.end_ms, o.tenant, o.device, index);
    Email { file_name, message: m }
}

/// The subject as plain ASCII when it is, else as RFC 2047 `B` encoded words of at most 75
/// characters, folded one per line; characters are never split across words.
pub fn encode_subject(subject: &str) -> String {
    let subject = subject.replace(['\r', '\n'], " ");
    if subject.is_ascii() && subject.len() <= 900 {
        return subject;
    }
    const MAX_BYTES: usize = 45; // 60 base64 characters + "=?UTF-8?B?" + "?=" = 72
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in subject.chars() {
        if chunk.len() + c.len_utf8() > MAX_BYTES {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(w)))
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// Splits `line` into pieces of at most `max` bytes on character boundaries.
fn wrap(line: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out.push(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_subject(encoded: &str) -> String {
        encoded
            .split("\r\n ")
            .map(|w| {
                let b64 =
                    w.strip_prefix("=?UTF-8?B?").and_then(|w| w.strip_suffix("?=")).expect("encoded word");
                let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
                String::from_utf8(bytes).expect("each word is whole UTF-8")
            })
            .collect()
    }

    #[test]
    fn utf8_subjects_become_short_encoded_words_that_decode_back() {
        let s = "⚠️ ALERTA DE FALHA IMINENTE — Equipamento MTR-042 (manutenção preditiva)";
        let e = encode_subject(s);
        assert!(e.is_ascii());
        assert!(e.split("\r\n ").all(|w| w.len() <= 75), "{e}");
        assert_eq!(decode_subject(&e), s);
        assert_eq!(encode_subject("plain"), "plain");
    }

    #[test]
    fn file_names_of_tenants_and_devices_that_share_a_prefix_do_not_collide() {
        let outcome = |tenant: &str, device: &str| WindowOutcome {
            tenant: tenant.into(),
            device: device.into(),
            end_ms: 1_743_849_000_000,
            features: Default::default(),
            score: crate::types::Score { probability: 0.9, model: "m".into(), contributions: vec![] },
            decision: crate::types::Decision { is_failure: true, alerts: vec![] },
            versions: Default::default(),
        };
        let alert = Alert { severity: Severity::Critical, subject: "s".into(), body: "b".into() };
        let a = render(&outcome("a", "b-c"), 0, &alert, &[], 0);
        let b = render(&outcome("a-b", "c"), 0, &alert, &[], 0);
        assert_ne!(a.file_name, b.file_name);
        assert_eq!(a.file_name, "1743849000000+a+b-c+0.eml");
    }

    #[test]
    fn long_lines_are_wrapped_on_char_boundaries() {
        let line = "é".repeat(1000);
        let pieces = wrap(&line, 901);
        assert!(pieces.iter().all(|p| p.len() <= 901));
        assert_eq!(pieces.concat(), line);
    }
}
