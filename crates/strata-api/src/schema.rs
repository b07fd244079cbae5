//! The schema types of the OpenAPI document: the wire form of what the handlers take and
//! answer, for their annotations to name. They are never built: the handlers read and write
//! JSON through the domain types.
//!
//! The types mirror the wire form of `strata_core::user` and of the account and session
//! answers. Every limit they state comes from the constant the parsers enforce —
//! `strata_core::user::limits`, `strata_core::email` and the password limits of [`crate::auth`] —
//! through the field schemas built in code below (utoipa's `max_length` and similar attributes
//! take only literals). The patterns restate the parsers' character rules; the tests below run
//! each pattern against the parser it describes, so a pattern cannot drift from its parser.
//! Objects whose parser refuses unknown fields say `additionalProperties: false`.

use serde::Serialize;
use strata_core::email::{DOMAIN_LABEL_MAX_BYTES, EMAIL_MAX_BYTES, LOCAL_PART_MAX_BYTES};
use strata_core::user::limits::{
    CITY_MAX_CHARS, NAME_MAX_CHARS, PHONE_NUMBER_MAX_CHARS, PHONE_NUMBERS_MAX,
    POSTAL_CODE_MAX_CHARS, POSTAL_CODE_MAX_NUMBER, STATE_MAX_CHARS, STREET_MAX_CHARS,
};
use strata_store::accounts::KNOWN_ROLES;
use utoipa::ToSchema;
use utoipa::openapi::schema::{
    ArrayBuilder, Object, ObjectBuilder, OneOfBuilder, SchemaType, Type,
};

use crate::auth::{PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS};

/// Text fields that must not be empty.
const NOT_EMPTY: usize = 1;

/// The control characters (Unicode category Cc), which `char::is_control` refuses.
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";
/// The white space (Unicode `White_Space`) that is not a control character: with [`CONTROL`],
/// what `char::is_whitespace` and so `str::trim` remove.
const SPACE: &str = r"\u0020\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// The characters of a phone number besides digits (`strata_core::user`).
const PHONE_MARKS: &str = r" +().x\-";
/// The characters of a postal code given as a string besides letters and digits.
const POSTAL_MARKS: &str = r" \-";

/// A name or address line: no control character, and not blank.
pub fn text_pattern() -> String {
    format!("^[^{CONTROL}]*[^{CONTROL}{SPACE}][^{CONTROL}]*$")
}

/// A phone number: digits, spaces and `+ - ( ) . x`, with at least one digit.
pub fn phone_pattern() -> String {
    format!("^[0-9{PHONE_MARKS}]*[0-9][0-9{PHONE_MARKS}]*$")
}

/// A postal code as a string: ASCII letters, digits, spaces and hyphens, not only spaces.
pub fn postal_code_pattern() -> String {
    format!("^[A-Za-z0-9{POSTAL_MARKS}]*[A-Za-z0-9\\-][A-Za-z0-9{POSTAL_MARKS}]*$")
}

/// An email address as `strata_core::email::Email::parse` accepts it, in ASCII: a local part
/// of printable characters other than `@`, and a domain of two or more labels of letters, digits
/// and inner hyphens.
pub fn email_pattern() -> String {
    let label = format!(
        "[A-Za-z0-9](?:[A-Za-z0-9\\-]{{0,{}}}[A-Za-z0-9])?",
        DOMAIN_LABEL_MAX_BYTES - 2
    );
    format!("^[!-?A-~]{{1,{LOCAL_PART_MAX_BYTES}}}@(?:{label}\\.)+{label}$")
}

/// A string of 1 to `max` characters, neither blank nor holding control characters.
fn text(max: usize) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(NOT_EMPTY))
        .max_length(Some(max))
        .pattern(Some(text_pattern()))
        .build()
}

fn name() -> Object {
    text(NAME_MAX_CHARS)
}

fn street() -> Object {
    text(STREET_MAX_CHARS)
}

fn city() -> Object {
    text(CITY_MAX_CHARS)
}

fn state() -> Object {
    text(STATE_MAX_CHARS)
}

/// `phoneNumbers`, as an array of `types`.
fn phones(types: SchemaType) -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(types)
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(NOT_EMPTY))
                .max_length(Some(PHONE_NUMBER_MAX_CHARS))
                .pattern(Some(phone_pattern())),
        )
        .description(Some(format!(
            "At most {PHONE_NUMBERS_MAX} entries, each {NOT_EMPTY} to {PHONE_NUMBER_MAX_CHARS} \
             characters of digits, spaces and `+ - ( ) . x`."
        )))
        .max_items(Some(PHONE_NUMBERS_MAX))
}

fn phone_numbers() -> ArrayBuilder {
    phones(Type::Array.into())
}

/// `phoneNumbers` in a merge patch, where null removes them (the profile then has none).
fn patch_phone_numbers() -> ArrayBuilder {
    phones(SchemaType::from_iter([Type::Array, Type::Null]))
}

fn postal_code_description() -> String {
    format!(
        "`address.postalCode`: a whole number from 0 to {POSTAL_CODE_MAX_NUMBER}, or a string of \
         {NOT_EMPTY} to {POSTAL_CODE_MAX_CHARS}\nletters, digits, spaces or hyphens (to keep \
         leading zeros and letters). It is returned in\nthe form it was given."
    )
}

/// `address.postalCode`: a number or a string, returned in the form it was given.
fn postal_code() -> OneOfBuilder {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0u64))
                .maximum(Some(POSTAL_CODE_MAX_NUMBER)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(NOT_EMPTY))
                .max_length(Some(POSTAL_CODE_MAX_CHARS))
                .pattern(Some(postal_code_pattern())),
        )
        .description(Some(postal_code_description()))
}

/// A user id: any unsigned 64-bit number.
pub fn user_id() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(u64::MIN))
        .maximum(Some(u64::MAX))
        .build()
}

fn email(description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        // No `format: email`: that is RFC 5321's mailbox, and the pattern says exactly what
        // `Email::parse` takes (which differs: see its documentation).
        .description(Some(description))
        .min_length(Some(NOT_EMPTY))
        .max_length(Some(EMAIL_MAX_BYTES))
        .pattern(Some(email_pattern()))
        .build()
}

fn new_email() -> Object {
    email("Unique across the deployment; stored lower case.")
}

fn login_email() -> Object {
    email("The account's email, in any case.")
}

fn stored_email() -> Object {
    email("Lower case.")
}

fn new_password() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(PASSWORD_MIN_CHARS))
        .max_length(Some(PASSWORD_MAX_CHARS))
        .build()
}

fn password() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(NOT_EMPTY))
        .max_length(Some(PASSWORD_MAX_CHARS))
        .build()
}

fn roles() -> ArrayBuilder {
    ArrayBuilder::new().items(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(KNOWN_ROLES.iter().copied())),
    )
}

/// A fixed string, such as `token_type`'s `Bearer`.
fn one_of_strings(values: &'static [&'static str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

fn bearer() -> Object {
    one_of_strings(&["Bearer"])
}

fn okp() -> Object {
    one_of_strings(&["OKP"])
}

fn ed25519() -> Object {
    one_of_strings(&["Ed25519"])
}

fn eddsa() -> Object {
    one_of_strings(&["EdDSA"])
}

fn signing() -> Object {
    one_of_strings(&["sig"])
}

fn alive() -> Object {
    one_of_strings(&["alive"])
}

fn ready() -> Object {
    one_of_strings(&["ready"])
}

/// An address as the API returns and takes it: every field required, no other field.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AddressDoc {
    #[schema(schema_with = street)]
    street_address: String,
    #[schema(schema_with = city)]
    city: String,
    #[schema(schema_with = state)]
    state: String,
    #[schema(schema_with = postal_code)]
    postal_code: u64,
}

/// A user as the API returns it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id":12,"firstName":"John","lastName":"Smith","address":{"streetAddress":"21 2nd Street","city":"New York","state":"NY","postalCode":10021},"phoneNumbers":["212 555-1234","646555-4567"]}))]
#[allow(dead_code)]
pub struct UserDoc {
    #[schema(schema_with = user_id)]
    id: u64,
    #[schema(schema_with = name)]
    first_name: String,
    #[schema(schema_with = name)]
    last_name: String,
    address: AddressDoc,
    #[schema(schema_with = phone_numbers)]
    phone_numbers: Vec<String>,
}

/// A user as a client sends it (POST, PUT). Unknown fields are refused; `phoneNumbers` may be
/// left out (none). The server assigns ids: a POST must not carry `id`, and a PUT may carry
/// it only with the path's value, which changes nothing (this schema leaves it out).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"firstName":"John","lastName":"Smith","address":{"streetAddress":"21 2nd Street","city":"New York","state":"NY","postalCode":10021},"phoneNumbers":["212 555-1234","646555-4567"]}))]
#[allow(dead_code)]
pub struct UserInput {
    #[schema(schema_with = name)]
    first_name: String,
    #[schema(schema_with = name)]
    last_name: String,
    address: AddressDoc,
    #[schema(schema_with = phone_numbers, required = false)]
    phone_numbers: Vec<String>,
}

/// The address in a merge patch: the fields to change.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AddressPatch {
    #[schema(schema_with = street, required = false)]
    street_address: String,
    #[schema(schema_with = city, required = false)]
    city: String,
    #[schema(schema_with = state, required = false)]
    state: String,
    #[schema(schema_with = postal_code, required = false)]
    postal_code: u64,
}

/// A JSON Merge Patch (RFC 7396) of a user: the members to change. `phoneNumbers: null`
/// removes the phone numbers; the other members are required in a user, so null is refused
/// for them, and so is any member a user does not have.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"address":{"city":"Brooklyn","postalCode":"11201"},"phoneNumbers":null}))]
#[allow(dead_code)]
pub struct UserPatch {
    #[schema(schema_with = name, required = false)]
    first_name: String,
    #[schema(schema_with = name, required = false)]
    last_name: String,
    #[schema(required = false)]
    address: AddressPatch,
    #[schema(schema_with = patch_phone_numbers, required = false)]
    phone_numbers: Vec<String>,
}

/// One page of `GET /users`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct UserPage {
    users: Vec<UserDoc>,
    /// Pass as `cursor` to get the next page; null on the last page.
    next_cursor: Option<String>,
}

/// `POST /accounts`. Unknown fields are refused.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email":"ann@example.com","password":"correct horse battery","profile":{"firstName":"Ann","lastName":"Lee","address":{"streetAddress":"1 Main St","city":"Boston","state":"MA","postalCode":"02134"}}}))]
#[allow(dead_code)]
pub struct AccountInput {
    #[schema(schema_with = new_email)]
    email: String,
    #[schema(schema_with = new_password)]
    password: String,
    profile: UserInput,
}

/// What `POST /accounts` answers: the account and its public profile.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct AccountCreated {
    #[schema(schema_with = user_id)]
    id: u64,
    #[schema(schema_with = stored_email)]
    email: String,
    /// None yet: roles are granted by an operator (`strata admin grant`).
    #[schema(schema_with = roles)]
    roles: Vec<String>,
    user: UserDoc,
}

/// An account: visible only to its owner and to admins.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AccountView {
    #[schema(schema_with = user_id)]
    id: u64,
    #[schema(schema_with = stored_email)]
    email: String,
    #[schema(schema_with = roles)]
    roles: Vec<String>,
    /// Milliseconds since the Unix epoch.
    created_at: u64,
}

/// `POST /sessions`. Other members are ignored.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct LoginInput {
    #[schema(schema_with = login_email)]
    email: String,
    #[schema(schema_with = password)]
    password: String,
    /// Browser mode: tokens in HttpOnly cookies, a CSRF token in the body.
    cookies: Option<bool>,
}

/// `POST /sessions/refresh` (or send the refresh cookie and `X-CSRF-Token`, with no body and
/// no `Content-Type`). Other members are ignored.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct RefreshInput {
    /// The `refresh_token` of the last login or refresh; a token that is not one answers 401.
    refresh_token: String,
}

/// What a login or refresh answers. In browser mode `access_token` and `refresh_token` are in
/// cookies instead, and `csrf_token` is here.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct TokenResponse {
    #[schema(schema_with = bearer)]
    token_type: String,
    /// A JWT signed with Ed25519 (`alg: EdDSA`); keys at `/.well-known/jwks.json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    access_token: Option<String>,
    /// Seconds until the access token expires.
    expires_in: u64,
    /// Opaque; spent by its first use.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    csrf_token: Option<String>,
    session_id: String,
    #[schema(schema_with = user_id)]
    user_id: u64,
}

/// One of my sessions.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct SessionView {
    id: String,
    created_at: u64,
    last_used_at: u64,
    expires_at: u64,
    user_agent: String,
    ip: String,
    /// The session of this request's token.
    current: bool,
}

/// `PUT /accounts/{id}/password`. The owner must give `current_password`; an admin changing
/// another account's password leaves it out. Unknown fields are refused.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"current_password":"correct horse battery","new_password":"staple battery horse"}))]
#[allow(dead_code)]
pub struct PasswordChange {
    #[schema(schema_with = password)]
    current_password: Option<String>,
    #[schema(schema_with = new_password)]
    new_password: String,
}

/// `GET /sessions`: my active sessions.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct SessionList {
    sessions: Vec<SessionView>,
}

/// A public key that verifies access tokens (RFC 8037).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Jwk {
    #[schema(schema_with = okp)]
    kty: String,
    #[schema(schema_with = ed25519)]
    crv: String,
    /// The public key, base64url.
    x: String,
    kid: String,
    #[serde(rename = "use")]
    #[schema(schema_with = signing)]
    use_: String,
    #[schema(schema_with = eddsa)]
    alg: String,
}

/// The JWK Set (RFC 7517), newest key first.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct JwkSet {
    keys: Vec<Jwk>,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Alive {
    #[schema(schema_with = alive)]
    status: String,
}

/// `GET /readyz`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Ready {
    #[schema(schema_with = ready)]
    status: String,
    /// The data tier's engine (`sqlite`, `postgres`, …).
    data: String,
}
