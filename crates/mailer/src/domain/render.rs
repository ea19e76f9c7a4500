//! Renders the emails (plain text + HTML): the verification email of a user event and the
//! "you received money" email of a crediting ledger event.
//!
//! The link is `{public_base_url}/v1/verify_email?email_id=..&secret_code=..` (the VerifyEmail
//! RPC's HTTP rule on the gateway); the base URL always comes from config.

use lettre::{
    Message,
    message::{Body, Mailbox, MultiPart, header::ContentTransferEncoding},
};

use super::event::{EventType, UserEvent};

/// An event whose contents cannot make an email (e.g. a malformed recipient address). Retrying
/// does not help: the event is dead-lettered at once.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    // the address is not repeated here: errors end up in logs (it stays in the dead letter's payload)
    #[error("the recipient address is not a valid email address")]
    BadRecipient,
    #[error("cannot build the message: {0}")]
    Build(String),
}

/// The verification link for `email_id` / `secret_code`, query values percent-encoded.
pub fn verification_link(public_base_url: &str, email_id: i64, secret_code: &str) -> String {
    format!(
        "{}/v1/verify_email?email_id={email_id}&secret_code={}",
        public_base_url.trim_end_matches('/'),
        encode_query_value(secret_code)
    )
}

/// Builds the email for `event`.
pub fn render(
    public_base_url: &str,
    from: &Mailbox,
    event: &UserEvent,
) -> Result<Message, RenderError> {
    let p = &event.payload;
    let to_addr = p.email.parse().map_err(|_| RenderError::BadRecipient)?;
    let name = p.full_name.trim();
    let to = Mailbox::new((!name.is_empty()).then(|| name.to_owned()), to_addr);
    let link = verification_link(public_base_url, p.email_id, &p.secret_code);
    let expires = p.expires_at.format("%Y-%m-%d %H:%M UTC").to_string();
    let greeting_name = if name.is_empty() { &p.username } else { name };
    let (subject, intro) = wording(event.event_type);

    let text = format!(
        "Hello {greeting_name},\n\n{intro}\n\n{link}\n\nThe link works once and expires at \
         {expires}.\nIf you did not ask for this, ignore this email.\n"
    );
    let html = format!(
        "<!doctype html>\n<html><body style=\"font-family: sans-serif\">\n<p>Hello {name},</p>\n\
         <p>{intro}</p>\n<p><a href=\"{href}\">Verify my email address</a></p>\n\
         <p style=\"color:#555\">Or copy this link into your browser:<br>{href}</p>\n\
         <p style=\"color:#555\">The link works once and expires at {expires}. If you did not ask \
         for this, ignore this email.</p>\n</body></html>\n",
        name = html_escape(greeting_name),
        intro = html_escape(intro),
        href = html_escape(&link),
    );

    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .multipart(MultiPart::alternative_plain_html(body(text), body(html)))
        .map_err(|e| RenderError::Build(e.to_string()))
}

/// What the "you received money" email says: the credit's transfer row, as far as it is told.
#[derive(Debug, Clone)]
pub struct Credited<'a> {
    /// The transfer's id.
    pub id: i64,
    /// The credited account.
    pub to_account_id: i64,
    /// Minor units of `currency`.
    pub amount: i64,
    pub currency: &'a str,
    /// The payer's description, if any.
    pub description: Option<&'a str>,
}

/// The "you received money" email to `to` (name, address) for `t`. The description is the
/// payer's text: escaped in HTML, cut to 200 characters.
pub fn render_money_received(
    public_base_url: &str,
    from: &Mailbox,
    to: (&str, &str),
    t: &Credited<'_>,
) -> Result<Message, RenderError> {
    let (name, email) = (to.0.trim(), to.1);
    let to_addr = email.parse().map_err(|_| RenderError::BadRecipient)?;
    let to = Mailbox::new((!name.is_empty()).then(|| name.to_owned()), to_addr);
    let amount = format_amount(t.amount, t.currency);
    let account = t.to_account_id;
    let description: Option<String> = t
        .description
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.chars().filter(|c| !c.is_control()).take(200).collect());
    let settings = format!("{}/v1/users/me", public_base_url.trim_end_matches('/'));
    let greeting = if name.is_empty() { "there" } else { name };
    let reference = match &description {
        Some(d) => format!("\nReference: {d}"),
        None => String::new(),
    };
    let text = format!(
        "Hello {greeting},\n\nYou received {amount} in your account {account}.{reference}\n\
         Transfer: {id}\n\nDo not want these emails? Turn them off with \
         PATCH {settings} {{\"notify_money_received\": false}}.\n",
        id = t.id,
    );
    let html_reference = match &description {
        Some(d) => format!("<p>Reference: {}</p>\n", html_escape(d)),
        None => String::new(),
    };
    let html = format!(
        "<!doctype html>\n<html><body style=\"font-family: sans-serif\">\n<p>Hello {name},</p>\n\
         <p>You received <strong>{amount}</strong> in your account {account}.</p>\n\
         {html_reference}<p style=\"color:#555\">Transfer: {id}</p>\n\
         <p style=\"color:#555\">Do not want these emails? Turn them off with PATCH {settings} \
         {{&quot;notify_money_received&quot;: false}}.</p>\n</body></html>\n",
        name = html_escape(greeting),
        amount = html_escape(&amount),
        id = t.id,
        settings = html_escape(&settings),
    );
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(format!("You received {amount}"))
        .multipart(MultiPart::alternative_plain_html(body(text), body(html)))
        .map_err(|e| RenderError::Build(e.to_string()))
}

/// Digits after the decimal point of a currency's minor unit (ISO 4217): 0 for the yen and the
/// other currencies without a minor unit, 3 for the dinars and rials that have thousandths, else 2.
pub fn currency_exponent(currency: &str) -> u32 {
    match currency.to_ascii_uppercase().as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// `amount` minor units of `currency` as text: `2500, "USD"` → `25.00 USD`, `500, "JPY"` →
/// `500 JPY`. Exact (integer arithmetic), for any i64.
pub fn format_amount(amount: i64, currency: &str) -> String {
    let exp = currency_exponent(currency);
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    let code = currency.to_ascii_uppercase();
    if exp == 0 {
        return format!("{sign}{abs} {code}");
    }
    let unit = 10u64.pow(exp);
    format!(
        "{sign}{}.{:0width$} {code}",
        abs / unit,
        abs % unit,
        width = exp as usize
    )
}

/// The subject and the first sentence of each email.
fn wording(kind: EventType) -> (&'static str, &'static str) {
    match kind {
        EventType::UserCreated => (
            "Verify your email address",
            "thank you for signing up. Please confirm your email address by opening this link:",
        ),
        EventType::EmailChanged => (
            "Confirm your new email address",
            "your email address was changed. Please confirm the new address by opening this link:",
        ),
        EventType::VerificationResent => (
            "Your new verification link",
            "here is a new link to confirm your email address:",
        ),
    }
}

/// Plain ASCII with lines within SMTP's 998-octet limit goes as `7bit`, so the link stays intact
/// and clickable even in the raw `.eml` a developer opens in an editor (lettre would pick
/// quoted-printable for any line over 76 characters, and the link line always is). Anything else
/// gets lettre's own choice.
fn body(text: String) -> Body {
    if text.is_ascii() && text.lines().all(|l| l.len() <= 998) {
        Body::dangerous_pre_encoded(
            text.replace('\n', "\r\n").into_bytes(),
            ContentTransferEncoding::SevenBit,
        )
    } else {
        Body::new(text)
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // numeric references keep the HTML part ASCII (and so readable as 7bit)
            c if !c.is_ascii() => out.push_str(&format!("&#{};", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::VerificationPayload;

    fn event(kind: EventType, full_name: &str, secret: &str) -> UserEvent {
        UserEvent {
            event_id: "0b8e8f3e-6f7a-4f55-9d5c-3f0f4d0c2a11".into(),
            event_type: kind,
            payload: VerificationPayload {
                username: "alice".into(),
                full_name: full_name.into(),
                email: "alice@example.com".into(),
                email_id: 42,
                secret_code: secret.into(),
                expires_at: "2026-11-26T10:00:00Z".parse().unwrap(),
            },
            traceparent: None,
        }
    }

    #[test]
    fn the_link_uses_the_configured_base_and_encodes_the_code() {
        assert_eq!(
            verification_link("https://api.example.com/", 42, "a+b/c=d e"),
            "https://api.example.com/v1/verify_email?email_id=42&secret_code=a%2Bb%2Fc%3Dd%20e"
        );
    }

    #[test]
    fn the_email_is_addressed_to_the_user_and_has_text_and_html() {
        let from: Mailbox = "Transactions <no-reply@example.com>".parse().unwrap();
        let msg = render(
            "https://api.example.com",
            &from,
            &event(EventType::UserCreated, "Alice Example", "abc"),
        )
        .unwrap();
        let raw = String::from_utf8(msg.formatted()).unwrap();
        assert!(
            raw.contains("To: \"Alice Example\" <alice@example.com>"),
            "{raw}"
        );
        assert!(raw.contains("Content-Type: text/plain"));
        assert!(raw.contains("Content-Type: text/html"));
        assert!(raw.contains("Subject: Verify your email address"));
        assert!(
            raw.contains("https://api.example.com/v1/verify_email?email_id=42&secret_code=abc\r\n"),
            "the link is readable in the raw message: {raw}"
        );
    }

    #[test]
    fn non_ascii_names_survive_in_both_parts() {
        let from: Mailbox = "no-reply@example.com".parse().unwrap();
        let msg = render(
            "https://api.example.com",
            &from,
            &event(EventType::UserCreated, "José Ñandú", "abc"),
        )
        .unwrap();
        let raw = String::from_utf8(msg.formatted()).unwrap();
        assert!(raw.contains("Jos&#233; &#209;and&#250;"), "{raw}");
        assert!(
            raw.contains("Content-Transfer-Encoding: quoted-printable"),
            "{raw}"
        );
    }

    #[test]
    fn the_users_name_is_escaped_in_html() {
        let from: Mailbox = "no-reply@example.com".parse().unwrap();
        let msg = render(
            "https://api.example.com",
            &from,
            &event(EventType::EmailChanged, "Al <b>", "abc"),
        )
        .unwrap();
        let raw = String::from_utf8(msg.formatted()).unwrap();
        assert!(raw.contains("<p>Hello Al &lt;b&gt;,</p>"), "{raw}");
        assert!(raw.contains("Subject: Confirm your new email address"));
    }

    #[test]
    fn amounts_use_the_currencys_minor_unit() {
        assert_eq!(format_amount(2500, "USD"), "25.00 USD");
        assert_eq!(format_amount(7, "eur"), "0.07 EUR");
        assert_eq!(format_amount(500, "JPY"), "500 JPY");
        assert_eq!(format_amount(1234, "KWD"), "1.234 KWD");
        assert_eq!(format_amount(-150, "GBP"), "-1.50 GBP");
        assert_eq!(format_amount(i64::MIN, "USD"), "-92233720368547758.08 USD");
    }

    #[test]
    fn the_money_email_names_the_amount_the_account_and_the_escaped_reference() {
        let from: Mailbox = "no-reply@example.com".parse().unwrap();
        let t = Credited {
            id: 9001,
            to_account_id: 57,
            amount: 2500,
            currency: "USD",
            description: Some("order <1234>"),
        };
        let msg = render_money_received(
            "https://api.example.com",
            &from,
            ("Bea", "bea@example.com"),
            &t,
        )
        .unwrap();
        let raw = String::from_utf8(msg.formatted()).unwrap();
        assert!(raw.contains("Subject: You received 25.00 USD"), "{raw}");
        assert!(raw.contains("To: Bea <bea@example.com>"), "{raw}");
        assert!(
            raw.contains("You received 25.00 USD in your account 57."),
            "{raw}"
        );
        assert!(raw.contains("Reference: order &lt;1234&gt;"), "{raw}");
        assert!(raw.contains("Transfer: 9001"), "{raw}");
    }

    #[test]
    fn an_invalid_recipient_cannot_be_rendered() {
        let from: Mailbox = "no-reply@example.com".parse().unwrap();
        let mut e = event(EventType::VerificationResent, "A", "abc");
        e.payload.email = "not an address".into();
        assert!(matches!(
            render("http://x", &from, &e),
            Err(RenderError::BadRecipient)
        ));
    }
}
