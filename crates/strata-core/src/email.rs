//! Email addresses: the one place where raw text becomes an [`Email`].
//!
//! An account is found by its email, so every tier must agree on what an address is and on its
//! one spelling. [`Email::parse`] checks the text and normalizes it (trimmed, lower case); an
//! [`Email`] cannot be built any other way, so the tiers behind the edge never check again.
//! [`EmailError`]'s messages are sentence fragments ("must not be empty") that the web tier
//! puts after the field they name.

use serde::{Serialize, Serializer};

/// Longest accepted email, in bytes (RFC 5321's path limit).
pub const EMAIL_MAX_BYTES: usize = 254;
/// Longest accepted part before the `@`, in bytes (RFC 5321).
pub const LOCAL_PART_MAX_BYTES: usize = 64;
/// Longest accepted label of the domain, in bytes (RFC 1035).
pub const DOMAIN_LABEL_MAX_BYTES: usize = 63;

/// A checked, normalized email address (trimmed, lower case).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Email(String);

/// Why text is not an email address. Each message completes "the email …".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {} bytes", EMAIL_MAX_BYTES)]
    TooLong,
    #[error("must be an email address such as ann@example.com")]
    NoAt,
    #[error("must have 1 to {} characters before the @", LOCAL_PART_MAX_BYTES)]
    LocalPart,
    #[error("must not contain spaces, control characters or a second @")]
    ForbiddenCharacter,
    #[error("must have a domain such as example.com after the @")]
    Domain,
}

impl Email {
    /// Checks and normalizes an email address. Surrounding whitespace is dropped and letters
    /// are lowered; then the address must be at most [`EMAIL_MAX_BYTES`] long, have 1 to
    /// [`LOCAL_PART_MAX_BYTES`] bytes before its last `@` and a domain of at least two labels
    /// (letters, digits, inner hyphens) after it, and contain no spaces, control characters or
    /// second `@`.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err(EmailError::Empty);
        }
        if email.len() > EMAIL_MAX_BYTES {
            return Err(EmailError::TooLong);
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err(EmailError::NoAt);
        };
        if local.is_empty() || local.len() > LOCAL_PART_MAX_BYTES {
            return Err(EmailError::LocalPart);
        }
        if email.chars().any(|c| c.is_control() || c.is_whitespace()) || local.contains('@') {
            return Err(EmailError::ForbiddenCharacter);
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= DOMAIN_LABEL_MAX_BYTES
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if domain.split('.').count() < 2 || !domain.split('.').all(label_ok) {
            return Err(EmailError::Domain);
        }
        Ok(Self(email))
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// As a JSON string.
impl Serialize for Email {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> Result<String, EmailError> {
        Email::parse(raw).map(|e| e.as_str().to_owned())
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            parsed("  Ann@Example.COM ").as_deref(),
            Ok("ann@example.com")
        );
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@",
            "ann@localhost",
            "ann@exa mple.com",
            "a b@example.com",
            "ann@-example.com",
            "ann@example..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} must be refused");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn each_refusal_says_what_is_wrong() {
        let long = format!("{}@example.com", "a".repeat(250));
        let long_local = format!("{}@example.com", "a".repeat(65));
        let cases = [
            ("  ", "must not be empty"),
            (long.as_str(), "must be at most 254 bytes"),
            ("ann", "must be an email address such as ann@example.com"),
            ("@example.com", "must have 1 to 64 characters before the @"),
            (
                long_local.as_str(),
                "must have 1 to 64 characters before the @",
            ),
            (
                "a b@example.com",
                "must not contain spaces, control characters or a second @",
            ),
            (
                "ann@x@example.com",
                "must not contain spaces, control characters or a second @",
            ),
            (
                "ann@localhost",
                "must have a domain such as example.com after the @",
            ),
            (
                "ann@example..com",
                "must have a domain such as example.com after the @",
            ),
        ];
        for (raw, why) in cases {
            assert_eq!(
                Email::parse(raw).map_err(|e| e.to_string()),
                Err(why.to_owned()),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn an_email_prints_and_serializes_as_its_normalized_text() {
        let email = Email::parse(" Ann@Example.com").expect("valid");
        assert_eq!(email.to_string(), "ann@example.com");
        assert_eq!(email.as_ref(), "ann@example.com");
        assert_eq!(
            serde_json::to_string(&email).ok().as_deref(),
            Some(r#""ann@example.com""#)
        );
    }
}
