//! The schema types of the OpenAPI document: the wire form of what the handlers take and
//! answer, for their annotations to name. They are never built: the handlers read and write
//! JSON through the domain types.
//!
//! The types mirror the wire form of `strata_core::user`. Every limit they state comes from
//! the constant the parsers enforce — `strata_core::user::limits`, `strata_core::email` and
//! the password limits of [`crate::auth`] — through the field schemas built in code below
//! (utoipa's `max_length` and similar attributes take only literals).

use serde::Serialize;
use strata_core::email::EMAIL_MAX_BYTES;
use strata_core::user::limits::{
    CITY_MAX_CHARS, NAME_MAX_CHARS, PHONE_NUMBER_MAX_CHARS, PHONE_NUMBERS_MAX,
    POSTAL_CODE_MAX_CHARS, POSTAL_CODE_MAX_NUMBER, STATE_MAX_CHARS, STREET_MAX_CHARS,
};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, SchemaType, Type};

use crate::auth::{PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS};

/// Text fields that must not be empty.
const NOT_EMPTY: usize = 1;

/// A string of 1 to `max` characters.
fn text(max: usize) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(NOT_EMPTY))
        .max_length(Some(max))
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
        .items(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(format!(
            "At most {PHONE_NUMBERS_MAX} entries, each {NOT_EMPTY} to {PHONE_NUMBER_MAX_CHARS} \
             characters of digits, spaces and `+ - ( ) . x`."
        )))
        .max_items(Some(PHONE_NUMBERS_MAX))
}

fn phone_numbers() -> ArrayBuilder {
    phones(Type::Array.into())
}

/// `phoneNumbers` where it may be left out or null.
fn optional_phone_numbers() -> ArrayBuilder {
    phones(SchemaType::from_iter([Type::Array, Type::Null]))
}

fn new_email() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("Unique across the deployment; stored lower case."))
        .max_length(Some(EMAIL_MAX_BYTES))
        .build()
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
        .max_length(Some(PASSWORD_MAX_CHARS))
        .build()
}

fn postal_code_description() -> String {
    format!(
        "`address.postalCode`: a whole number from 0 to {POSTAL_CODE_MAX_NUMBER}, or a string of \
         {NOT_EMPTY} to {POSTAL_CODE_MAX_CHARS}\nletters, digits, spaces or hyphens (to keep \
         leading zeros and letters). It is returned in\nthe form it was given."
    )
}

/// `address.postalCode`: a number or a string, returned in the form it was given (the
/// document's description of it is built from the limits in code).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[schema(description = postal_code_description())]
#[allow(dead_code)]
pub enum PostalCodeDoc {
    Number(u64),
    Text(String),
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AddressDoc {
    #[schema(schema_with = street)]
    street_address: String,
    #[schema(schema_with = city)]
    city: String,
    #[schema(schema_with = state)]
    state: String,
    postal_code: PostalCodeDoc,
}

/// A user as the API returns it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id":12,"firstName":"John","lastName":"Smith","address":{"streetAddress":"21 2nd Street","city":"New York","state":"NY","postalCode":10021},"phoneNumbers":["212 555-1234","646555-4567"]}))]
#[allow(dead_code)]
pub struct UserDoc {
    id: u64,
    #[schema(schema_with = name)]
    first_name: String,
    #[schema(schema_with = name)]
    last_name: String,
    address: AddressDoc,
    #[schema(schema_with = phone_numbers)]
    phone_numbers: Vec<String>,
}

/// A user as a client sends it (POST, PUT). Unknown fields are refused. In a PUT, `id` may be
/// present if it equals the path id.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"firstName":"John","lastName":"Smith","address":{"streetAddress":"21 2nd Street","city":"New York","state":"NY","postalCode":10021},"phoneNumbers":["212 555-1234","646555-4567"]}))]
#[allow(dead_code)]
pub struct UserInput {
    #[schema(schema_with = name)]
    first_name: String,
    #[schema(schema_with = name)]
    last_name: String,
    address: AddressDoc,
    #[schema(schema_with = optional_phone_numbers)]
    phone_numbers: Option<Vec<String>>,
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
#[schema(example = json!({"email":"ann@example.com","password":"correct horse battery","profile":{"firstName":"Ann","lastName":"Lee","address":{"streetAddress":"1 Main St","city":"Boston","state":"MA","postalCode":"02134"}}}))]
#[allow(dead_code)]
pub struct AccountInput {
    #[schema(schema_with = new_email)]
    email: String,
    #[schema(schema_with = new_password)]
    password: String,
    profile: UserInput,
}

/// An account: visible only to its owner and to admins.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AccountView {
    id: u64,
    email: String,
    roles: Vec<String>,
    /// Milliseconds since the Unix epoch.
    created_at: u64,
}

/// `POST /sessions`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct LoginInput {
    email: String,
    #[schema(schema_with = password)]
    password: String,
    /// Browser mode: tokens in HttpOnly cookies, a CSRF token in the body.
    cookies: Option<bool>,
}

/// `POST /sessions/refresh` (or send the refresh cookie and `X-CSRF-Token`, with no body).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct RefreshInput {
    refresh_token: String,
}

/// What a login or refresh answers. In browser mode `access_token` and `refresh_token` are in
/// cookies instead, and `csrf_token` is here.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct TokenResponse {
    token_type: String,
    /// A JWT signed with Ed25519 (`alg: EdDSA`); keys at `/.well-known/jwks.json`.
    access_token: Option<String>,
    /// Seconds until the access token expires.
    expires_in: u64,
    /// Opaque; spent by its first use.
    refresh_token: Option<String>,
    csrf_token: Option<String>,
    session_id: String,
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
