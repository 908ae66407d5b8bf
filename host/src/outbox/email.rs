//! Alert e-mails as RFC 5322 messages, rendered by `lettre`'s builder: addresses validated,
//! headers folded, a UTF-8 subject as RFC 2047 encoded words, a UTF-8 body sent as 8bit with CRLF
//! line endings. They are written as `.eml` files a mail relay or a person can pick up; the same
//! bytes are what an SES sink sends as a raw message.

use crate::pipeline::WindowOutcome;
use crate::types::Alert;
use lettre::address::Envelope;
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, Message};
use std::time::{Duration, UNIX_EPOCH};
use tracing::warn;

/// Sender of alert e-mails when `[email] from` sets none.
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
/// `[alerts] email` list, validated when the tenant was loaded (`config`): an address that does
/// not parse is left out with a warning; none gives `undisclosed-recipients:;`).
pub fn render(
    o: &WindowOutcome,
    index: usize,
    alert: &Alert,
    from: &str,
    to: &[String],
    now_ms: i64,
) -> Email {
    let from: Mailbox = from.parse().unwrap_or_else(|_| {
        warn!(from, "[email] from is not an address; the alert is sent from {FROM}");
        FROM.parse().expect("the default sender is a valid mailbox")
    });
    let severity = crate::outbox::messages::severity_str(alert.severity);
    let mut b = Message::builder()
        .from(from.clone())
        .subject(alert.subject.replace(['\r', '\n'], " "))
        .date(UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64))
        .message_id(Some(message_id(o, index)))
        .header(ContentType::TEXT_PLAIN);
    let mut recipients = 0;
    for address in to {
        match address.parse::<Mailbox>() {
            Ok(m) => {
                b = b.to(m);
                recipients += 1;
            }
            Err(_) => warn!(tenant = %o.tenant, address, "Not an e-mail address; left out of the alert"),
        }
    }
    if recipients == 0 {
        // No visible recipient: the empty group, and an envelope to the sender (lettre wants one).
        b = b.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("To"),
            "undisclosed-recipients:;".into(),
        ));
        let sender = from.email.clone();
        b = b.envelope(
            Envelope::new(Some(sender.clone()), vec![sender]).expect("an envelope with a recipient"),
        );
    }
    for (name, value) in [
        ("X-Edgepm-Alert-Id", crate::outbox::messages::alert_id(o, index)),
        ("X-Edgepm-Tenant", o.tenant.clone()),
        ("X-Edgepm-Device", o.device.clone()),
        ("X-Edgepm-Severity", severity.to_string()),
        ("X-Edgepm-Probability", format!("{:.4}", o.score.probability)),
    ] {
        b = b.raw_header(HeaderValue::new(HeaderName::new_from_ascii_str(name), value));
    }
    // 8bit keeps the text readable in the file. lettre would only take 8bit for lines under 76
    // bytes (and pick quoted-printable or base64 otherwise); RFC 5322 and 2045 allow 998, and
    // `body_text` guarantees CRLF endings, lines of at most 900 bytes and no NUL.
    let body =
        Body::dangerous_pre_encoded(body_text(&alert.body).into_bytes(), ContentTransferEncoding::EightBit);
    let message = match b.body(body) {
        Ok(m) => String::from_utf8_lossy(&m.formatted()).into_owned(),
        // Only a message without sender or recipients fails to build: both are always set.
        Err(e) => unreachable!("alert e-mail: {e}"),
    };
    let file_name = format!("{}+{}+{}+{}.eml", o.end_ms, o.tenant, o.device, index);
    Email { file_name, message }
}

/// `<end_ms+index+tenant+device@edgepm>` as a valid dot-atom: names are letters, digits, `-`,
/// `_` and `.`, and a `.` may not lead, end or double in a dot-atom, so it becomes `=` (in no
/// name: the id stays unique).
fn message_id(o: &WindowOutcome, index: usize) -> String {
    let atom = |name: &str| name.replace('.', "=");
    format!("<{}+{}+{}+{}@edgepm>", o.end_ms, index, atom(&o.tenant), atom(&o.device))
}

/// The body with CRLF line endings (a bare CR or LF ends a line too), lines of at most
/// [`MAX_LINE`] bytes cut on character boundaries, and no NUL.
fn body_text(body: &str) -> String {
    let body = body.replace('\0', "");
    let mut out = String::with_capacity(body.len() + 16);
    for line in body.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        for piece in wrap(line, MAX_LINE) {
            out.push_str(piece);
            out.push_str("\r\n");
        }
    }
    out
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
    use crate::types::Severity;
    use mail_parser::MessageParser;

    fn outcome(tenant: &str, device: &str) -> WindowOutcome {
        WindowOutcome {
            tenant: tenant.into(),
            device: device.into(),
            end_ms: 1_743_849_000_000,
            features: Default::default(),
            score: crate::types::Score { probability: 0.9, model: "m".into(), contributions: vec![] },
            decision: crate::types::Decision { is_failure: true, alerts: vec![] },
            versions: Default::default(),
        }
    }

    fn alert(subject: &str, body: &str) -> Alert {
        Alert { severity: Severity::Critical, subject: subject.into(), body: body.into() }
    }

    #[test]
    fn an_alert_e_mail_reads_back_as_written_in_a_mail_parser() {
        let subject = "⚠️ ALERTA DE FALHA IMINENTE — Equipamento MTR-042 (manutenção preditiva)";
        let body = "Probabilidade de falha: 90 %\nlinha com\rCR solto\r\n".to_string() + &"é".repeat(1000);
        let to: Vec<String> = (0..30).map(|i| format!("técnico {i} <maint{i}@plant.example>")).collect();
        let mail =
            render(&outcome("acme", "..MTR.042."), 0, &alert(subject, &body), FROM, &to, 1_743_849_000_000);
        let raw = mail.message.as_bytes();

        assert!(mail.message.split("\r\n").all(|l| l.len() <= 998), "no line over RFC 5322's limit");
        assert!(!mail.message.replace("\r\n", "").contains(['\r', '\n']), "CRLF only");
        let headers = &mail.message[..mail.message.find("\r\n\r\n").expect("header end")];
        assert!(headers.is_ascii(), "headers are ASCII (RFC 2047)");
        // lettre folds at about 76 characters and may run past 78 (RFC 5322's "should") by a word.
        assert!(headers.split("\r\n").all(|l| l.len() <= 100), "folded: {headers}");
        let to_lines = headers.split("\r\n").skip_while(|l| !l.starts_with("To: ")).skip(1);
        assert!(to_lines.take_while(|l| l.starts_with(' ')).count() >= 10, "30 recipients fold: {headers}");
        assert!(mail.message.contains("\r\nContent-Transfer-Encoding: 8bit\r\n"), "readable in the file");

        let parsed = MessageParser::default().parse(raw).expect("parses");
        assert_eq!(parsed.subject(), Some(subject));
        let rcpt = parsed.to().expect("To").iter().collect::<Vec<_>>();
        assert_eq!(rcpt.len(), 30);
        assert_eq!(rcpt[7].address(), Some("maint7@plant.example"));
        assert_eq!(rcpt[7].name(), Some("técnico 7"));
        assert_eq!(parsed.from().and_then(|f| f.first()).and_then(|a| a.address()), Some("edgepm@localhost"));
        assert_eq!(parsed.message_id(), Some("1743849000000+0+acme+==MTR=042=@edgepm"));
        assert_eq!(parsed.date().map(|d| d.to_timestamp()), Some(1_743_849_000));
        assert_eq!(parsed.header_raw("X-Edgepm-Device").map(str::trim), Some("..MTR.042."));
        let id = parsed.header_raw("X-Edgepm-Alert-Id").map(str::trim);
        assert_eq!(id, Some("acme/..MTR.042./1743849000000/0"), "the alert's stable id");
        let text = parsed.body_text(0).expect("text body");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&lines[..3], &["Probabilidade de falha: 90 %", "linha com", "CR solto"]);
        assert_eq!(lines[3..].concat(), "é".repeat(1000), "a long line wrapped, nothing lost");
    }

    #[test]
    fn an_address_that_does_not_parse_is_left_out() {
        let to = ["maint@plant.example".to_string(), "not an address".to_string()];
        let mail = render(&outcome("a", "b"), 0, &alert("s", "b"), FROM, &to, 0);
        assert!(mail.message.contains("\r\nTo: maint@plant.example\r\n"), "{}", mail.message);
        let none = render(&outcome("a", "b"), 0, &alert("s", "b"), FROM, &[], 0);
        assert!(none.message.contains("\r\nTo: undisclosed-recipients:;\r\n"), "{}", none.message);
    }

    #[test]
    fn file_names_of_tenants_and_devices_that_share_a_prefix_do_not_collide() {
        let alert = alert("s", "b");
        let a = render(&outcome("a", "b-c"), 0, &alert, FROM, &[], 0);
        let b = render(&outcome("a-b", "c"), 0, &alert, FROM, &[], 0);
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
