//! The OpenAPI 3.1 document, assembled from the handlers' annotations and the schema types of
//! [`crate::schema`], and served at `/openapi.json`. Every limit the document states is built
//! from the constant its parser enforces (`strata_core::user::limits`, `strata_core::email`,
//! the password and page-size limits), so the document cannot drift from what is enforced; a
//! test here checks the limits, and one parses the document's example through the real parser.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use crate::auth::{ACCESS_COOKIE, CSRF_HEADER, REFRESH_COOKIE};
use crate::schema::{
    AccountCreated, AccountInput, AccountView, AddressDoc, AddressPatch, Alive, Jwk, JwkSet,
    LoginInput, PasswordChange, Ready, RefreshInput, SessionList, SessionView, TokenResponse,
    UserDoc, UserInput, UserPage, UserPatch,
};

/// The ways a request authenticates, named by the operations' `security`: `Authorization:
/// Bearer <access token>`; in browser mode the access cookie (and, on unsafe methods, the CSRF
/// header); and the refresh cookie of `POST /sessions/refresh`.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from `POST /sessions`."))
                    .build(),
            ),
        );
        let described =
            |value: &str, description: &str| ApiKeyValue::with_description(value, description);
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(described(
                ACCESS_COOKIE,
                "Browser mode: the access token in its cookie.",
            ))),
        );
        components.add_security_scheme(
            "csrf",
            SecurityScheme::ApiKey(ApiKey::Header(described(
                CSRF_HEADER.as_str(),
                "Browser mode: the session's CSRF token, on every unsafe request a cookie authenticates.",
            ))),
        );
        components.add_security_scheme(
            "refresh_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(described(
                REFRESH_COOKIE,
                "Browser mode: the refresh token in its cookie (send no body and no Content-Type).",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    modifiers(&SecuritySchemes),
    info(title = "Strata users API", description = "User profiles: the canonical `GET /users/12` and everything around it. Errors are RFC 9457 problem+json (`type` is `urn:strata:problem:` and the name each response lists). Every status an operation can answer is listed with it."),
    paths(
        crate::users::create, crate::users::get_one, crate::users::replace, crate::users::patch,
        crate::users::delete, crate::users::list,
        crate::photos::upload, crate::photos::job, crate::photos::get_photo, crate::photos::image,
        crate::photos::delete,
        crate::accounts::create, crate::accounts::get_one, crate::accounts::change_password,
        crate::sessions::login, crate::sessions::refresh, crate::sessions::list,
        crate::sessions::logout, crate::sessions::revoke, crate::sessions::jwks,
        crate::ops::healthz, crate::ops::readyz, crate::ops::metrics, serve,
    ),
    components(schemas(UserDoc, UserInput, UserPatch, UserPage, AddressDoc, AddressPatch, AccountInput, AccountCreated, AccountView, PasswordChange, LoginInput, RefreshInput, TokenResponse, SessionView, SessionList, Jwk, JwkSet, Alive, Ready, crate::problem::Problem, crate::problem::ProblemItem, crate::photos::JobView, crate::photos::PhotoBytes)),
    tags((name = "users", description = "User profiles"), (name = "photos", description = "Profile photos, processed asynchronously"), (name = "accounts", description = "Accounts, sessions and tokens"), (name = "operations", description = "Health, readiness, metrics, this document"))
)]
pub struct ApiDoc;

/// The document as JSON text.
pub fn document() -> String {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    complete_parameters(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
}

/// What utoipa leaves out of a parameter whose schema a function builds (`schema_with`): every
/// path parameter is required (OpenAPI 3.1 §4.8.12.1), and the parameter carries the
/// description its schema function wrote.
fn complete_parameters(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let parameters = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("parameters").and_then(|p| p.as_array_mut()))
        .flatten();
    for parameter in parameters {
        if parameter["in"] == "path" {
            parameter["required"] = true.into();
        }
        if parameter.get("description").is_none()
            && let Some(d) = parameter["schema"].get("description").cloned()
        {
            parameter["description"] = d;
        }
    }
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()), responses(
    (status = 200, description = "The OpenAPI 3.1 document", body = Object, content_type = "application/json"),
    crate::responses::TimedOut))]
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
    use crate::users::{LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT, LIST_MIN_LIMIT};

    #[test]
    fn every_operation_declares_its_security_path_parameters_and_server_errors() {
        let doc: Value = serde_json::from_str(&document()).unwrap_or_default();
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        assert!(paths.len() >= 14, "{}", paths.len());
        let mut faults = Vec::new();
        for (path, operations) in &paths {
            for (method, op) in operations.as_object().into_iter().flatten() {
                let name = format!("{} {path}", method.to_uppercase());
                if !op["security"].is_array() {
                    faults.push(format!(
                        "{name}: no security requirement (use `security(())` for none)"
                    ));
                }
                let declared: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .inspect(|p| {
                        if p["required"] != true {
                            faults.push(format!(
                                "{name}: path parameter {} is not required",
                                p["name"]
                            ));
                        }
                    })
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                let in_path: Vec<&str> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                    .collect();
                if declared != in_path {
                    faults.push(format!(
                        "{name}: path parameters {declared:?}, path has {in_path:?}"
                    ));
                }
                if op["responses"].as_object().is_none_or(|r| r.is_empty()) {
                    faults.push(format!("{name}: no responses"));
                }
            }
        }
        assert!(faults.is_empty(), "{faults:#?}");
    }

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
        let postal = field("AddressDoc", "postalCode");
        assert_eq!(
            postal["oneOf"][0]["maximum"],
            Value::from(POSTAL_CODE_MAX_NUMBER)
        );
        assert_eq!(postal["oneOf"][1]["maxLength"], n(POSTAL_CODE_MAX_CHARS));
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
            .map(|p| p["schema"].clone())
            .unwrap_or_default();
        assert_eq!(limit["minimum"], Value::from(LIST_MIN_LIMIT));
        assert_eq!(limit["maximum"], Value::from(LIST_MAX_LIMIT));
        assert_eq!(limit["default"], Value::from(LIST_DEFAULT_LIMIT));
    }
}
