//! The OpenAPI 3.1 document, assembled from the handlers' annotations and the schema types of
//! [`crate::schema`], and served at `/openapi.json`. The schema types take their limits from
//! `strata_core::user::limits`, so the document cannot drift from what the parser enforces
//! (a test parses the document's example through the real parser).

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
        crate::accounts::create, crate::accounts::get_one, crate::accounts::login,
        crate::accounts::refresh, crate::accounts::list, crate::accounts::logout,
        crate::accounts::revoke, crate::accounts::jwks,
        crate::ops::healthz, crate::ops::readyz, crate::ops::metrics,
    ),
    components(schemas(UserDoc, UserInput, UserPage, AddressDoc, PostalCodeDoc, AccountInput, AccountView, LoginInput, RefreshInput, TokenResponse, SessionView, crate::problem::Problem, crate::problem::ProblemItem)),
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
