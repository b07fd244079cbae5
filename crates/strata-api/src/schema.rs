//! The schema types of the OpenAPI document: the wire form of what the handlers take and
//! answer, for their annotations to name. The types mirror the wire form of `strata_core::user`
//! and take their limits from `strata_core::user::limits`. They are never built: the handlers
//! read and write JSON through the domain types.

use serde::Serialize;
use utoipa::ToSchema;

/// `address.postalCode`: a whole number from 0 to 9999999999, or a string of 1 to 16
/// letters, digits, spaces or hyphens (to keep leading zeros and letters). It is returned in
/// the form it was given.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum PostalCodeDoc {
    Number(u64),
    Text(String),
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AddressDoc {
    #[schema(min_length = 1, max_length = 200)]
    street_address: String,
    #[schema(min_length = 1, max_length = 100)]
    city: String,
    #[schema(min_length = 1, max_length = 100)]
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
    #[schema(min_length = 1, max_length = 100)]
    first_name: String,
    #[schema(min_length = 1, max_length = 100)]
    last_name: String,
    address: AddressDoc,
    /// At most 10 entries, each 1 to 32 characters of digits, spaces and `+ - ( ) . x`.
    #[schema(max_items = 10)]
    phone_numbers: Vec<String>,
}

/// A user as a client sends it (POST, PUT). Unknown fields are refused. In a PUT, `id` may be
/// present if it equals the path id.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"firstName":"John","lastName":"Smith","address":{"streetAddress":"21 2nd Street","city":"New York","state":"NY","postalCode":10021},"phoneNumbers":["212 555-1234","646555-4567"]}))]
#[allow(dead_code)]
pub struct UserInput {
    #[schema(min_length = 1, max_length = 100)]
    first_name: String,
    #[schema(min_length = 1, max_length = 100)]
    last_name: String,
    address: AddressDoc,
    /// At most 10 entries, each 1 to 32 characters of digits, spaces and `+ - ( ) . x`.
    #[schema(max_items = 10)]
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
    /// Unique across the deployment; stored lower case.
    #[schema(max_length = 254)]
    email: String,
    #[schema(min_length = 8, max_length = 128)]
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
    #[schema(max_length = 128)]
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
