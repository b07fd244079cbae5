//! The user domain: what a profile is, and the one place where raw JSON becomes one.
//!
//! The wire form is the canonical example, field for field:
//!
//! ```json
//! {"id":12,"firstName":"John","lastName":"Smith",
//!  "address":{"streetAddress":"21 2nd Street","city":"New York","state":"NY","postalCode":10021},
//!  "phoneNumbers":["212 555-1234","646555-4567"]}
//! ```
//!
//! [`UserProfile::parse`] checks a whole document and reports *every* field at fault as a JSON
//! pointer (`/address/postalCode`), so a client fixes all its mistakes in one round trip. Types
//! built here cannot hold an invalid value: inner tiers never validate again.
//!
//! `postalCode` accepts a JSON number or a string and keeps the form it was given, so
//! `"02134"` keeps its leading zero and `10021` stays a number.

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Every length limit of the representation. Lengths count Unicode scalar values.
pub mod limits {
    /// `firstName`, `lastName`: 1 to 100 characters.
    pub const NAME_MAX_CHARS: usize = 100;
    /// `address.streetAddress`: 1 to 200 characters.
    pub const STREET_MAX_CHARS: usize = 200;
    /// `address.city`: 1 to 100 characters.
    pub const CITY_MAX_CHARS: usize = 100;
    /// `address.state`: 1 to 100 characters.
    pub const STATE_MAX_CHARS: usize = 100;
    /// `address.postalCode` as a string: 1 to 16 characters of letters, digits, spaces, hyphens.
    pub const POSTAL_CODE_MAX_CHARS: usize = 16;
    /// `address.postalCode` as a number: a whole number from 0 to this.
    pub const POSTAL_CODE_MAX_NUMBER: u64 = 9_999_999_999;
    /// `phoneNumbers`: at most 10 entries.
    pub const PHONE_NUMBERS_MAX: usize = 10;
    /// Each phone number: 1 to 32 characters of digits, spaces and `+ - ( ) . x`, with a digit.
    pub const PHONE_NUMBER_MAX_CHARS: usize = 32;
}

/// A user id: any unsigned 64-bit number (server-issued ids are Snowflakes; the canonical user
/// is 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub u64);

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for UserId {
    type Err = std::num::ParseIntError;
    /// Accepts only plain decimal digits (no sign, no spaces).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            // Produce the standard error kind for non-numeric input.
            return "x".parse::<u64>().map(UserId);
        }
        s.parse::<u64>().map(UserId)
    }
}

/// One field at fault: where (a JSON pointer into the request body) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldViolation {
    pub pointer: String,
    pub detail: String,
}

impl FieldViolation {
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }
}

/// A bounded, non-blank, single-line text field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Text(String);

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// `postalCode`: kept in the form the client sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PostalCode {
    Number(u64),
    Text(String),
}

/// A phone number as written by its owner (`212 555-1234`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    pub street_address: Text,
    pub city: Text,
    pub state: Text,
    pub postal_code: PostalCode,
}

/// Everything about a user except the id: what a client sends to create or replace one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserProfile {
    pub first_name: Text,
    pub last_name: Text,
    pub address: Address,
    pub phone_numbers: Vec<PhoneNumber>,
}

/// A stored user: an id and its profile.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    pub id: UserId,
    pub profile: UserProfile,
}

/// What a request body may say about `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdField {
    /// Creating: the server assigns ids, so the body must not carry one.
    Forbidden,
    /// Replacing user N: the body may carry `"id": N`, and nothing else.
    MayEqual(UserId),
}

const TOP_FIELDS: [&str; 5] = ["id", "firstName", "lastName", "address", "phoneNumbers"];
const ADDRESS_FIELDS: [&str; 4] = ["streetAddress", "city", "state", "postalCode"];

impl UserProfile {
    /// Parses a request body into a profile, collecting every violation.
    pub fn parse(body: &Value, id_field: IdField) -> Result<Self, Vec<FieldViolation>> {
        let mut errors = Vec::new();
        let Some(obj) = body.as_object() else {
            return Err(vec![FieldViolation::new(
                "",
                "the body must be a JSON object",
            )]);
        };
        unknown_fields(obj, &TOP_FIELDS, "", &mut errors);
        match (obj.get("id"), id_field) {
            (None, _) => {}
            (Some(_), IdField::Forbidden) => errors.push(FieldViolation::new(
                "/id",
                "the server assigns ids: leave `id` out when creating a user",
            )),
            (Some(v), IdField::MayEqual(expected)) => {
                if v.as_u64() != Some(expected.0) {
                    errors.push(FieldViolation::new(
                        "/id",
                        format!("`id` cannot change: it must be {expected} or left out"),
                    ));
                }
            }
        }
        let first_name = text(
            obj,
            "firstName",
            "/firstName",
            limits::NAME_MAX_CHARS,
            &mut errors,
        );
        let last_name = text(
            obj,
            "lastName",
            "/lastName",
            limits::NAME_MAX_CHARS,
            &mut errors,
        );
        let address = match obj.get("address") {
            None => {
                errors.push(FieldViolation::new("/address", "is required"));
                None
            }
            Some(Value::Object(a)) => parse_address(a, &mut errors),
            Some(other) => {
                errors.push(FieldViolation::new(
                    "/address",
                    format!("must be an object, not {}", kind(other)),
                ));
                None
            }
        };
        let phone_numbers = parse_phones(obj.get("phoneNumbers"), &mut errors);
        match (first_name, last_name, address, phone_numbers) {
            (Some(first_name), Some(last_name), Some(address), Some(phone_numbers))
                if errors.is_empty() =>
            {
                Ok(Self {
                    first_name,
                    last_name,
                    address,
                    phone_numbers,
                })
            }
            _ => Err(errors),
        }
    }

    /// The profile as a JSON object without `id` (how stores keep it).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(ProfileWire(self)).unwrap_or(Value::Null)
    }
}

impl User {
    /// The canonical example: user 12, John Smith of New York.
    pub fn canonical() -> Self {
        let doc = serde_json::json!({
            "firstName": "John",
            "lastName": "Smith",
            "address": {
                "streetAddress": "21 2nd Street",
                "city": "New York",
                "state": "NY",
                "postalCode": 10021
            },
            "phoneNumbers": ["212 555-1234", "646555-4567"]
        });
        let profile = UserProfile::parse(&doc, IdField::Forbidden)
            .unwrap_or_else(|e| unreachable!("the canonical user is valid: {e:?}"));
        User {
            id: UserId(12),
            profile,
        }
    }

    /// The full representation, `id` first.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Escapes a key for use in a JSON pointer (RFC 6901).
pub fn escape_pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn unknown_fields(
    obj: &Map<String, Value>,
    known: &[&str],
    prefix: &str,
    errors: &mut Vec<FieldViolation>,
) {
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            errors.push(FieldViolation::new(
                format!("{prefix}/{}", escape_pointer_token(key)),
                format!(
                    "is not a field of this object (known: {})",
                    known.join(", ")
                ),
            ));
        }
    }
}

fn check_text(s: &str, max: usize) -> Result<(), String> {
    let chars = s.chars().count();
    if chars == 0 || s.trim().is_empty() {
        return Err("must not be empty or blank".into());
    }
    if chars > max {
        return Err(format!("must be at most {max} characters (got {chars})"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters such as newlines or tabs".into());
    }
    Ok(())
}

fn text(
    obj: &Map<String, Value>,
    key: &str,
    pointer: &str,
    max: usize,
    errors: &mut Vec<FieldViolation>,
) -> Option<Text> {
    match obj.get(key) {
        None => {
            errors.push(FieldViolation::new(pointer, "is required"));
            None
        }
        Some(Value::String(s)) => match check_text(s, max) {
            Ok(()) => Some(Text(s.clone())),
            Err(detail) => {
                errors.push(FieldViolation::new(pointer, detail));
                None
            }
        },
        Some(other) => {
            errors.push(FieldViolation::new(
                pointer,
                format!("must be a string, not {}", kind(other)),
            ));
            None
        }
    }
}

fn parse_address(a: &Map<String, Value>, errors: &mut Vec<FieldViolation>) -> Option<Address> {
    unknown_fields(a, &ADDRESS_FIELDS, "/address", errors);
    let street_address = text(
        a,
        "streetAddress",
        "/address/streetAddress",
        limits::STREET_MAX_CHARS,
        errors,
    );
    let city = text(a, "city", "/address/city", limits::CITY_MAX_CHARS, errors);
    let state = text(
        a,
        "state",
        "/address/state",
        limits::STATE_MAX_CHARS,
        errors,
    );
    let postal_code = parse_postal_code(a.get("postalCode"), errors);
    Some(Address {
        street_address: street_address?,
        city: city?,
        state: state?,
        postal_code: postal_code?,
    })
}

fn parse_postal_code(v: Option<&Value>, errors: &mut Vec<FieldViolation>) -> Option<PostalCode> {
    const P: &str = "/address/postalCode";
    match v {
        None => {
            errors.push(FieldViolation::new(P, "is required"));
            None
        }
        // JSON does not tell 876 from 876.0 (JSON Schema calls both integers): a whole number
        // written with a fraction is that whole number.
        Some(Value::Number(n)) => match n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| {
                    f.fract() == 0.0 && (0.0..=limits::POSTAL_CODE_MAX_NUMBER as f64).contains(f)
                })
                .map(|f| f as u64)
        }) {
            Some(n) if n <= limits::POSTAL_CODE_MAX_NUMBER => Some(PostalCode::Number(n)),
            _ => {
                errors.push(FieldViolation::new(
                    P,
                    format!(
                        "as a number it must be a whole number from 0 to {}; send a string to keep leading zeros or letters",
                        limits::POSTAL_CODE_MAX_NUMBER
                    ),
                ));
                None
            }
        },
        Some(Value::String(s)) => {
            let chars = s.chars().count();
            let ok_chars = s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-');
            if chars == 0
                || chars > limits::POSTAL_CODE_MAX_CHARS
                || !ok_chars
                || s.trim().is_empty()
            {
                errors.push(FieldViolation::new(
                    P,
                    format!(
                        "as a string it must be 1 to {} letters, digits, spaces or hyphens",
                        limits::POSTAL_CODE_MAX_CHARS
                    ),
                ));
                None
            } else {
                Some(PostalCode::Text(s.clone()))
            }
        }
        Some(other) => {
            errors.push(FieldViolation::new(
                P,
                format!("must be a number or a string, not {}", kind(other)),
            ));
            None
        }
    }
}

fn parse_phones(v: Option<&Value>, errors: &mut Vec<FieldViolation>) -> Option<Vec<PhoneNumber>> {
    const P: &str = "/phoneNumbers";
    let items = match v {
        None => return Some(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            errors.push(FieldViolation::new(
                P,
                format!("must be an array of strings, not {}", kind(other)),
            ));
            return None;
        }
    };
    if items.len() > limits::PHONE_NUMBERS_MAX {
        errors.push(FieldViolation::new(
            P,
            format!(
                "must have at most {} entries (got {})",
                limits::PHONE_NUMBERS_MAX,
                items.len()
            ),
        ));
        return None;
    }
    let before = errors.len();
    let mut phones = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let pointer = format!("{P}/{i}");
        match item {
            Value::String(s) => {
                let chars = s.chars().count();
                let allowed = s
                    .chars()
                    .all(|c| c.is_ascii_digit() || " +-().x".contains(c));
                if chars == 0
                    || chars > limits::PHONE_NUMBER_MAX_CHARS
                    || !allowed
                    || !s.chars().any(|c| c.is_ascii_digit())
                {
                    errors.push(FieldViolation::new(
                        pointer,
                        format!(
                            "must be 1 to {} characters of digits, spaces and + - ( ) . x, with at least one digit",
                            limits::PHONE_NUMBER_MAX_CHARS
                        ),
                    ));
                } else {
                    phones.push(PhoneNumber(s.clone()));
                }
            }
            other => errors.push(FieldViolation::new(
                pointer,
                format!("must be a string, not {}", kind(other)),
            )),
        }
    }
    (errors.len() == before).then_some(phones)
}

// ---- serialization: the canonical wire form -------------------------------------------------

struct ProfileWire<'a>(&'a UserProfile);

fn write_profile<M: SerializeMap>(map: &mut M, p: &UserProfile) -> Result<(), M::Error> {
    map.serialize_entry("firstName", p.first_name.as_str())?;
    map.serialize_entry("lastName", p.last_name.as_str())?;
    map.serialize_entry("address", &AddressWire(&p.address))?;
    let phones: Vec<&str> = p.phone_numbers.iter().map(PhoneNumber::as_str).collect();
    map.serialize_entry("phoneNumbers", &phones)
}

impl Serialize for ProfileWire<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(4))?;
        write_profile(&mut map, self.0)?;
        map.end()
    }
}

struct AddressWire<'a>(&'a Address);

impl Serialize for AddressWire<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("streetAddress", a.street_address.as_str())?;
        map.serialize_entry("city", a.city.as_str())?;
        map.serialize_entry("state", a.state.as_str())?;
        match &a.postal_code {
            PostalCode::Number(n) => map.serialize_entry("postalCode", n)?,
            PostalCode::Text(t) => map.serialize_entry("postalCode", t)?,
        }
        map.end()
    }
}

impl Serialize for UserProfile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ProfileWire(self).serialize(s)
    }
}

impl Serialize for User {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(5))?;
        map.serialize_entry("id", &self.id.0)?;
        write_profile(&mut map, &self.profile)?;
        map.end()
    }
}

/// Deserializing goes through [`UserProfile::parse`], so stored documents are checked too: a
/// corrupt row is an error, never a half-valid profile.
impl<'de> Deserialize<'de> for UserProfile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        UserProfile::parse(&v, IdField::Forbidden).map_err(|errs| {
            let list: Vec<String> = errs
                .iter()
                .map(|e| format!("{} {}", e.pointer, e.detail))
                .collect();
            serde::de::Error::custom(format!("invalid user profile: {}", list.join("; ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const CANONICAL: &str = r#"{"id":12,"firstName":"John","lastName":"Smith","address":{"streetAddress":"21 2nd Street","city":"New York","state":"NY","postalCode":10021},"phoneNumbers":["212 555-1234","646555-4567"]}"#;

    #[test]
    fn the_canonical_user_serializes_field_for_field() {
        assert_eq!(
            serde_json::to_string(&User::canonical()).expect("json"),
            CANONICAL
        );
    }

    #[test]
    fn postal_codes_keep_the_form_they_were_given() {
        for (given, expect) in [
            (json!("02134"), "\"02134\""),
            (json!(10021), "10021"),
            (json!("SW1A 1AA"), "\"SW1A 1AA\""),
            (json!(876.0), "876"),
        ] {
            let mut doc: Value = serde_json::from_str(CANONICAL).expect("json");
            doc.as_object_mut().expect("object").remove("id");
            doc["address"]["postalCode"] = given;
            let p = UserProfile::parse(&doc, IdField::Forbidden).expect("valid");
            let out = serde_json::to_string(&p).expect("json");
            assert!(out.contains(&format!("\"postalCode\":{expect}")), "{out}");
        }
    }

    #[test]
    fn every_field_at_fault_is_reported_as_a_json_pointer() {
        let doc = json!({
            "id": 5,
            "firstName": "",
            "lastName": 7,
            "address": {"streetAddress": "x", "city": "y", "state": "z", "postalCode": -1, "zip": 1},
            "phoneNumbers": ["+1 (212) 555-1234", "no digits", 3],
            "nickname": "j"
        });
        let errs = UserProfile::parse(&doc, IdField::Forbidden).expect_err("invalid");
        let pointers: Vec<&str> = errs.iter().map(|e| e.pointer.as_str()).collect();
        for p in [
            "/id",
            "/firstName",
            "/lastName",
            "/address/postalCode",
            "/address/zip",
            "/phoneNumbers/1",
            "/phoneNumbers/2",
            "/nickname",
        ] {
            assert!(pointers.contains(&p), "{p} missing from {pointers:?}");
        }
        assert_eq!(pointers.len(), 8, "{errs:?}");
    }

    #[test]
    fn length_limits_are_enforced_at_the_boundary() {
        let base = || json!({"firstName": "a", "lastName": "b", "address": {"streetAddress": "s", "city": "c", "state": "st", "postalCode": "1"}});
        let mut ok = base();
        ok["firstName"] = json!("é".repeat(limits::NAME_MAX_CHARS));
        assert!(UserProfile::parse(&ok, IdField::Forbidden).is_ok());
        let mut long = base();
        long["firstName"] = json!("a".repeat(limits::NAME_MAX_CHARS + 1));
        assert_eq!(
            UserProfile::parse(&long, IdField::Forbidden).expect_err("too long")[0].pointer,
            "/firstName"
        );
        let mut phones = base();
        phones["phoneNumbers"] = json!(vec!["1"; limits::PHONE_NUMBERS_MAX + 1]);
        assert_eq!(
            UserProfile::parse(&phones, IdField::Forbidden).expect_err("too many")[0].pointer,
            "/phoneNumbers"
        );
        let mut zip = base();
        zip["address"]["postalCode"] = json!("1".repeat(limits::POSTAL_CODE_MAX_CHARS + 1));
        assert!(UserProfile::parse(&zip, IdField::Forbidden).is_err());
    }

    #[test]
    fn an_id_in_a_replacement_must_match_the_path() {
        let mut doc: Value = serde_json::from_str(CANONICAL).expect("json");
        assert!(UserProfile::parse(&doc, IdField::MayEqual(UserId(12))).is_ok());
        doc["id"] = json!(13);
        let errs = UserProfile::parse(&doc, IdField::MayEqual(UserId(12))).expect_err("mismatch");
        assert_eq!(errs[0].pointer, "/id");
    }

    #[test]
    fn user_ids_parse_only_from_plain_decimal_digits() {
        assert_eq!("12".parse::<UserId>(), Ok(UserId(12)));
        assert_eq!(
            "18446744073709551615".parse::<UserId>(),
            Ok(UserId(u64::MAX))
        );
        for bad in ["", "-1", "+1", " 1", "1.0", "abc", "18446744073709551616"] {
            assert!(bad.parse::<UserId>().is_err(), "{bad:?}");
        }
    }

    fn text_strategy(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[A-Za-zÀ-ÿ0-9 .,'-]{{0,{}}}[A-Za-z]", max - 1))
            .expect("regex")
    }

    prop_compose! {
        fn arb_profile_json()(
            first in text_strategy(limits::NAME_MAX_CHARS),
            last in text_strategy(limits::NAME_MAX_CHARS),
            street in text_strategy(limits::STREET_MAX_CHARS),
            city in text_strategy(limits::CITY_MAX_CHARS),
            state in text_strategy(limits::STATE_MAX_CHARS),
            postal in prop_oneof![
                (0..=limits::POSTAL_CODE_MAX_NUMBER).prop_map(|n| json!(n)),
                "[0-9A-Z][0-9A-Z -]{0,15}".prop_map(|s| json!(s)),
            ],
            phones in proptest::collection::vec("[+(]?[0-9][0-9 ().x-]{0,30}", 0..=limits::PHONE_NUMBERS_MAX),
        ) -> Value {
            json!({"firstName": first, "lastName": last,
                   "address": {"streetAddress": street, "city": city, "state": state, "postalCode": postal},
                   "phoneNumbers": phones})
        }
    }

    proptest! {
        #[test]
        fn any_valid_profile_round_trips_through_json_unchanged(doc in arb_profile_json(), id in any::<u64>()) {
            let profile = UserProfile::parse(&doc, IdField::Forbidden).expect("generated profiles are valid");
            let user = User { id: UserId(id), profile: profile.clone() };
            let text = serde_json::to_string(&user).expect("json");
            let back: Value = serde_json::from_str(&text).expect("json");
            let mut expected = doc.clone();
            expected.as_object_mut().expect("object").insert("id".into(), json!(id));
            prop_assert_eq!(&back, &expected);
            let reparsed = UserProfile::parse(&back, IdField::MayEqual(UserId(id))).expect("valid");
            prop_assert_eq!(reparsed, profile);
        }

        #[test]
        fn parse_never_panics_on_arbitrary_json(s in "\\PC{0,200}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                let _ = UserProfile::parse(&v, IdField::Forbidden);
            }
        }
    }
}
