//! The OpenAPI 3.1 document, generated from the handlers' annotations and these schema types.
//! The schema types mirror the wire form of `strata_core::user` and take their limits from
//! `strata_core::user::limits`, so the document cannot drift from what the parser enforces
//! (a test parses the document's example through the real parser).

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

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

#[derive(OpenApi)]
#[openapi(
    info(title = "Strata users API", description = "User profiles: the canonical `GET /users/12` and everything around it. Errors are RFC 9457 problem+json."),
    paths(
        crate::users::create, crate::users::get_one, crate::users::replace, crate::users::patch,
        crate::users::delete, crate::users::list,
        crate::ops::healthz, crate::ops::readyz, crate::ops::metrics,
    ),
    components(schemas(UserDoc, UserInput, UserPage, AddressDoc, PostalCodeDoc, crate::problem::Problem, crate::problem::ProblemItem)),
    tags((name = "users", description = "User profiles"), (name = "operations", description = "Health, readiness, metrics"))
)]
pub struct ApiDoc;

/// The document as JSON text.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".into())
}
