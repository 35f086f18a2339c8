//! The admin API's guards on the real binary: probes answer without a token; every other
//! endpoint needs the bearer token from the 0600 token file generated on first start, a
//! `Host` naming the endpoint, and `Content-Type: application/json` on requests that change
//! something.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::http;
use common::ops::OpsBroker;

#[test]
fn the_admin_api_needs_the_generated_token_a_local_host_and_json() {
    let mut b = OpsBroker::start("");
    let admin = b.admin;
    let file = b.dir.join("admin.token");
    let mode = std::fs::metadata(&file).expect("token file generated").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token file mode");
    let token = b.token();
    assert!(token.len() >= 32, "{token}");
    let bearer = format!("Bearer {token}");

    for probe in ["/metrics", "/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(http::get(admin, probe).status, 200, "{probe}");
    }
    let doc: serde_json::Value = serde_json::from_str(&http::get(admin, "/openapi.json").body).expect("JSON");
    assert!(doc["paths"]["/v1/clients/{id}/kick"]["post"].is_object(), "{doc}");
    let none = http::get(admin, "/v1/clients");
    assert_eq!(none.status, 401, "{}", none.body);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = http::request(admin, "GET", "/v1/clients", &[("Authorization", "Bearer nope")], "");
    assert_eq!(wrong.status, 401);
    let rebound = http::request(
        admin,
        "GET",
        "/v1/clients",
        &[("Authorization", &bearer), ("Host", "attacker.example:9946")],
        "",
    );
    assert_eq!(rebound.status, 403, "{}", rebound.body);
    let form = http::request(
        admin,
        "POST",
        "/v1/publish",
        &[("Authorization", &bearer), ("Content-Type", "application/x-www-form-urlencoded")],
        "topic=a",
    );
    assert_eq!(form.status, 415, "{}", form.body);
    // With all three in order the request reaches the router (404: no such endpoint yet).
    let ok = http::request(admin, "GET", "/v1/nope", &[("Authorization", &bearer)], "");
    assert_eq!(ok.status, 404, "{}", ok.body);

    // A restart reuses the token.
    b.restart();
    assert_eq!(b.token(), token);
}
