//! The OpenAPI 3.1 document, assembled from the handlers' annotations and the schema types of
//! [`crate::schema`], and served at `/openapi.json`. Every limit the document states is built
//! from the constant its parser enforces (`strata_core::user::limits`, `strata_core::email`,
//! the password and page-size limits), so the document cannot drift from what is enforced; a
//! test here checks the limits, and one parses the document's example through the real parser.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use crate::schema::{
    AccountInput, AccountView, AddressDoc, LoginInput, PostalCodeDoc, RefreshInput, SessionView,
    TokenResponse, UserDoc, UserInput, UserPage,
};

/// `Authorization: Bearer <access token>` on every route that changes something.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    modifiers(&BearerAuth),
    info(title = "Strata users API", description = "User profiles: the canonical `GET /users/12` and everything around it. Errors are RFC 9457 problem+json."),
    paths(
        crate::users::create, crate::users::get_one, crate::users::replace, crate::users::patch,
        crate::users::delete, crate::users::list,
        crate::accounts::create, crate::accounts::get_one, crate::accounts::change_password,
        crate::sessions::login, crate::sessions::refresh, crate::sessions::list,
        crate::sessions::logout, crate::sessions::revoke, crate::sessions::jwks,
        crate::ops::healthz, crate::ops::readyz, crate::ops::metrics,
    ),
    components(schemas(UserDoc, UserInput, UserPage, AddressDoc, PostalCodeDoc, AccountInput, AccountView, LoginInput, RefreshInput, TokenResponse, SessionView, crate::schema::PasswordChange, crate::problem::Problem, crate::problem::ProblemItem)),
    tags((name = "users", description = "User profiles"), (name = "accounts", description = "Accounts, sessions and tokens"), (name = "operations", description = "Health, readiness, metrics"))
)]
pub struct ApiDoc;

/// The document as JSON text.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".into())
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    let mut r = (StatusCode::OK, document()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use strata_core::email::EMAIL_MAX_BYTES;
    use strata_core::user::limits::*;

    use super::*;
    use crate::auth::{PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS};
    use crate::users::{LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT};

    #[test]
    fn every_documented_limit_is_the_enforced_one() {
        let doc: Value = serde_json::from_str(&document()).unwrap_or_default();
        let schemas = &doc["components"]["schemas"];
        let field = |schema: &str, field: &str| schemas[schema]["properties"][field].clone();
        let n = |v: usize| Value::from(v);
        for schema in ["UserDoc", "UserInput"] {
            for name in ["firstName", "lastName"] {
                assert_eq!(field(schema, name)["maxLength"], n(NAME_MAX_CHARS));
                assert_eq!(field(schema, name)["minLength"], n(1));
            }
            let phones = field(schema, "phoneNumbers");
            assert_eq!(phones["maxItems"], n(PHONE_NUMBERS_MAX));
            assert_eq!(
                phones["description"],
                format!(
                    "At most {PHONE_NUMBERS_MAX} entries, each 1 to {PHONE_NUMBER_MAX_CHARS} \
                     characters of digits, spaces and `+ - ( ) . x`."
                )
            );
        }
        for (name, max) in [
            ("streetAddress", STREET_MAX_CHARS),
            ("city", CITY_MAX_CHARS),
            ("state", STATE_MAX_CHARS),
        ] {
            assert_eq!(field("AddressDoc", name)["maxLength"], n(max), "{name}");
        }
        let postal = schemas["PostalCodeDoc"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            postal.contains(&format!("from 0 to {POSTAL_CODE_MAX_NUMBER},"))
                && postal.contains(&format!("1 to {POSTAL_CODE_MAX_CHARS}\nletters")),
            "{postal}"
        );
        assert_eq!(
            field("AccountInput", "email")["maxLength"],
            n(EMAIL_MAX_BYTES)
        );
        assert_eq!(
            field("AccountInput", "password")["minLength"],
            n(PASSWORD_MIN_CHARS)
        );
        for schema in ["AccountInput", "LoginInput"] {
            assert_eq!(
                field(schema, "password")["maxLength"],
                n(PASSWORD_MAX_CHARS)
            );
        }
        let limit = doc["paths"]["/users"]["get"]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "limit"))
            .map(|p| p["description"].clone());
        assert_eq!(
            limit,
            Some(Value::from(format!(
                "Page size, 1 to {LIST_MAX_LIMIT} (default {LIST_DEFAULT_LIMIT})"
            )))
        );
    }
}
