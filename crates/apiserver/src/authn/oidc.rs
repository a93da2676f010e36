//! OIDC discovery for ServiceAccount tokens, so other systems can verify
//! them: `/.well-known/openid-configuration` and the key set it points at.

use axum::body::Body;
use axum::response::Response;
use serde_json::json;

use super::Authenticator;

pub const CONFIGURATION_PATH: &str = "/.well-known/openid-configuration";
pub const JWKS_PATH: &str = "/openid/v1/jwks";

/// The discovery document or the key set for `path`, if it is one of them.
/// `server_address` is where this server is reached (the default `jwks_uri`
/// host, as upstream builds it from its external address).
pub fn handle(auth: &Authenticator, server_address: &str, path: &str) -> Option<Response> {
    let (body, content_type) = match path {
        CONFIGURATION_PATH => (
            json!({
                "issuer": auth.issuer,
                "jwks_uri": format!("https://{server_address}{JWKS_PATH}"),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [super::jwt::ALG],
            }),
            "application/json",
        ),
        JWKS_PATH => (json!({"keys": [auth.key.jwk()]}), "application/jwk-set+json"),
        _ => return None,
    };
    Some(
        Response::builder()
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CACHE_CONTROL, "public, max-age=3600")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
}
