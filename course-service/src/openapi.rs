//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the types' `ToSchema` derives (so it cannot drift from the code), served
//! at `GET /api/openapi.json`. `scripts/test` runs schemathesis against a live instance
//! with it.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::courses;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "MicroCourses API",
        description = "The course catalogue: list, search and read courses; admins add, \
                       change and delete them (bearer token). Errors are RFC 9457 problems.",
    ),
    paths(
        courses::list,
        courses::get_one,
        courses::create,
        courses::replace,
        courses::patch,
        courses::delete
    ),
    modifiers(&BearerToken),
    tags((name = "courses", description = "The catalogue"))
)]
pub struct ApiDoc;

/// The `bearer` scheme the write operations name: `Authorization: Bearer $MC_ADMIN_TOKEN`.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default())
}

/// `GET /api/openapi.json`.
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn the_document_is_openapi_3_1_with_every_operation_and_the_write_security() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
        let paths = &doc["paths"];
        let methods = |path: &str| -> Vec<String> {
            let mut m: Vec<String> = paths[path].as_object().unwrap().keys().cloned().collect();
            m.sort();
            m
        };
        assert_eq!(methods("/api/courses"), ["get", "post"]);
        assert_eq!(
            methods("/api/courses/{id}"),
            ["delete", "get", "patch", "put"]
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(
            paths["/api/courses"]["post"]["security"][0]["bearer"],
            serde_json::json!([])
        );
        assert!(paths["/api/courses"]["get"].get("security").is_none());
        // The suggestion is documented, and optional (only a search that finds nothing has
        // one).
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let listing = schemas
            .iter()
            .find(|(name, _)| name.starts_with("Listing"))
            .map(|(_, s)| s)
            .expect("a Listing schema");
        assert!(
            listing["properties"].get("suggestion").is_some(),
            "{listing}"
        );
        let required = listing["required"].as_array().unwrap();
        assert!(!required.contains(&"suggestion".into()), "{listing}");
        assert_eq!(
            schemas["SuggestedSearch"]["required"],
            serde_json::json!(["q", "total", "link"])
        );
        let input = &doc["components"]["schemas"]["CourseInput"];
        assert_eq!(input["properties"]["title"]["maxLength"], 120);
        assert_eq!(
            doc["components"]["schemas"]["Level"]["enum"],
            serde_json::json!(["beginner", "intermediate", "advanced"])
        );
    }
}
