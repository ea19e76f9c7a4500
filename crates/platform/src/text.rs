//! Text a client sends that no column, log line or terminal should receive: control characters.
//!
//! PostgreSQL refuses U+0000 in `text` (a NUL in a field was a 500), and the other controls are
//! never meant in a name, a reason or a key: they forge log lines and terminal output. The gateway
//! refuses them in every string field of every request; the services call
//! [`reject_control_chars`] on the fields they parse, so a caller of the gRPC port directly meets
//! the same rule.

use crate::ApiError;

/// The reason of the field violation.
pub const INVALID_TEXT: &str = "invalid_text";

/// The description of the field violation.
pub const REFUSED_CONTROLS: &str = "must not contain control characters (U+0000 to U+001F other \
     than tab, line feed and carriage return, U+007F to U+009F)";

/// A control character refused in text: every Unicode `Cc` (C0, DEL, C1) except tab, line feed and
/// carriage return, which free text (a reason, a full name pasted from elsewhere) may carry.
/// Fields with a stricter form (a username, a currency code) refuse those by their own pattern.
pub fn is_refused_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// INVALID_ARGUMENT (reason `invalid_text`, a field violation on `field`) when `value` holds a
/// refused control character.
pub fn reject_control_chars(field: &str, value: &str) -> Result<(), ApiError> {
    if value.chars().any(is_refused_control) {
        return Err(invalid_text(field));
    }
    Ok(())
}

/// The error [`reject_control_chars`] answers, for callers that check text their own way.
pub fn invalid_text(field: &str) -> ApiError {
    ApiError::new(
        tonic::Code::InvalidArgument,
        INVALID_TEXT,
        format!("{field}: {REFUSED_CONTROLS}"),
    )
    .with_violation(field, REFUSED_CONTROLS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_other_controls_are_refused_naming_the_field() {
        for bad in [
            "a\0b",
            "\u{1b}[31mred",
            "bell\u{7}",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            let err = reject_control_chars("reason", bad).unwrap_err();
            assert_eq!(err.code, tonic::Code::InvalidArgument, "{bad:?}");
            assert_eq!(err.reason, INVALID_TEXT);
            assert_eq!(err.field_violations[0].field, "reason");
        }
    }

    #[test]
    fn printable_text_tabs_and_line_breaks_pass() {
        for good in [
            "",
            "alice",
            "Zoë Ångström",
            "two\nlines\r\n",
            "a\tb",
            "€ 💸",
        ] {
            reject_control_chars("reason", good).unwrap();
        }
    }
}
