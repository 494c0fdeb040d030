//! The API description at `GET /v3/api-docs`: an OpenAPI 3.1 document generated from the code,
//! listing every route of the API port with the answers each really gives. (scripts/test.sh also
//! runs schemathesis against the binary with this document.)

mod common;

use common::TestApp;
use serde_json::Value;

/// Every operation of the API port (REFERENCE §1.2), with the runtime-config admin API mounted.
const OPERATIONS: [(&str, &str); 16] = [
    ("get", "/v1/functions"),
    ("post", "/v1/functions"),
    ("get", "/v1/functions/{name}"),
    ("delete", "/v1/functions/{name}"),
    ("put", "/v1/functions/{name}/replicas"),
    ("post", "/v1/functions/{name}:invoke"),
    ("post", "/v1/functions/{name}:enqueue"),
    ("get", "/v1/executions/{executionId}"),
    ("get", "/v1/functions/{name}/executions"),
    ("post", "/v1/executions/{executionId}:redrive"),
    ("post", "/v1/internal/executions/{executionId}:complete"),
    ("get", "/v1/admin/runtime-config"),
    ("patch", "/v1/admin/runtime-config"),
    ("post", "/v1/admin/runtime-config/validate"),
    ("get", "/modules/build-metadata"),
    ("get", "/v3/api-docs"),
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(app: &TestApp) -> Value {
    let r = app
        .client
        .get(format!("{}/v3/api-docs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                found.push((method.clone(), path.clone()));
            }
        }
    }
    found.sort();
    found
}

fn statuses(doc: &Value, method: &str, path: &str) -> Vec<String> {
    doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} has no responses"))
        .keys()
        .cloned()
        .collect()
}

/// Every `$ref` in `value` names something the document defines.
fn assert_refs_resolve(doc: &Value, value: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let pointer = r.strip_prefix('#').expect("local reference");
                assert!(doc.pointer(pointer).is_some(), "dangling reference {r}");
            }
            map.values().for_each(|v| assert_refs_resolve(doc, v));
        }
        Value::Array(items) => items.iter().for_each(|v| assert_refs_resolve(doc, v)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_every_route() {
    let app = TestApp::with_env(&[("NANOFAAS_ADMIN_RUNTIME_CONFIG_ENABLED", "true")]).await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let mut expected: Vec<(String, String)> = OPERATIONS
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(operations(&doc), expected);
    assert_refs_resolve(&doc, &doc);

    // Each documented operation answers on its route (a route missing from the router would 404
    // with the framework's code, not the handler's).
    for (method, path) in OPERATIONS {
        let url = format!(
            "{}{}",
            app.base,
            path.replace("{name}", "nope")
                .replace("{executionId}", "nope")
        );
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = app
            .client
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16().to_string();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_ne!(
            body["error"], "404 NOT_FOUND",
            "{method} {path} is not routed"
        );
        assert!(
            statuses(&doc, &method.as_str().to_lowercase(), path).contains(&status),
            "{method} {path} answered an undocumented {status}"
        );
    }
}

#[tokio::test]
async fn every_error_status_is_documented_with_its_json_body_and_headers() {
    let app = TestApp::with_env(&[("NANOFAAS_ADMIN_RUNTIME_CONFIG_ENABLED", "true")]).await;
    let doc = document(&app).await;
    let invoke = statuses(&doc, "post", "/v1/functions/{name}:invoke");
    for code in [
        "200", "400", "401", "403", "404", "408", "413", "415", "429", "503",
    ] {
        assert!(invoke.contains(&code.to_owned()), "invoke lacks {code}");
    }
    let enqueue = statuses(&doc, "post", "/v1/functions/{name}:enqueue");
    assert!(enqueue.contains(&"501".to_owned()) && enqueue.contains(&"202".to_owned()));
    let register = statuses(&doc, "post", "/v1/functions");
    for code in ["201", "400", "409", "413", "415", "503"] {
        assert!(register.contains(&code.to_owned()), "register lacks {code}");
    }

    let invoke_responses = &doc["paths"]["/v1/functions/{name}:invoke"]["post"]["responses"];
    for code in ["200", "408"] {
        assert!(
            invoke_responses[code]["headers"]["X-Execution-Id"].is_object(),
            "{code} lacks X-Execution-Id"
        );
    }
    let throttled = &invoke_responses["429"]["headers"];
    assert!(throttled["Retry-After"].is_object() && throttled["X-Queue-Reject-Reason"].is_object());
    assert_eq!(
        doc["components"]["responses"]["TooManyRequests"]["headers"]["Retry-After"]["schema"]["type"],
        "integer"
    );
    assert!(
        doc["components"]["responses"]["Unauthorized"]["headers"]["WWW-Authenticate"].is_object()
    );
    assert!(doc["components"]["responses"]["MethodNotAllowed"]["headers"]["Allow"].is_object());
    // Errors are `{error, message}` JSON.
    let error = &doc["components"]["schemas"]["Error"];
    let required: Vec<&str> = error["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(required.contains(&"error") && required.contains(&"message"));

    // 401/403 on every protected route (all of /v1 but the runtime callback), described as
    // possible only with authentication on; the callback has neither.
    for (method, path) in OPERATIONS {
        let codes = statuses(&doc, method, path);
        let protected = path.starts_with("/v1/") && !path.starts_with("/v1/internal/");
        assert_eq!(
            codes.contains(&"401".to_owned()),
            protected,
            "{method} {path}"
        );
        assert_eq!(
            codes.contains(&"403".to_owned()),
            protected,
            "{method} {path}"
        );
        if protected {
            let security = &doc["paths"][path][method]["security"];
            assert!(
                security
                    .as_array()
                    .unwrap()
                    .contains(&serde_json::json!({})),
                "{method} {path}: authentication is optional (off by default)"
            );
        }
    }
    let unauthorized = doc["components"]["responses"]["Unauthorized"]["description"]
        .as_str()
        .unwrap();
    assert!(unauthorized.contains("only when authentication is enabled"));
}

#[tokio::test]
async fn the_published_flaws_are_corrected() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];
    // 3.0's `nullable` is gone: 3.1 nulls are a type, and no `type: 'null'` hides in a 3.0 document.
    assert!(!doc.to_string().contains("\"nullable\""));
    // The invocation status includes `timeout` (408) and `queued` (202).
    let status = schemas["InvocationStatus"]["enum"].as_array().unwrap();
    for s in ["success", "error", "timeout", "queued"] {
        assert!(status.contains(&Value::from(s)), "{s}");
    }
    // Fields written as null are documented as nullable.
    let output_error = &schemas["InvocationResponse"]["properties"]["error"];
    assert!(output_error.to_string().contains("null"), "{output_error}");
    // Without the admin API its routes are not listed.
    assert!(doc["paths"]["/v1/admin/runtime-config"].is_null());
}

// Bugs schemathesis found, each fixed in the code (scripts/schemathesis.sh finds them again if
// they come back).

/// serde's derived readers took a JSON array for a nested object (`"resources": ["1", "2"]` read
/// as `{cpu: "1", memory: "2"}`); Jackson refuses it, and so do we now.
#[tokio::test]
async fn a_nested_object_given_as_an_array_is_refused() {
    let app = TestApp::spawn().await;
    let base = serde_json::json!({"name": "arr", "image": "i", "executionMode": "LOCAL"});
    let with = |field: &str, value: Value| {
        let mut spec = base.clone();
        spec[field] = value;
        spec
    };
    for spec in [
        with("resources", serde_json::json!(["1", "2"])),
        with("scalingConfig", serde_json::json!(["INTERNAL", 1, 2])),
        with(
            "scalingConfig",
            serde_json::json!({"metrics": [["rps", "5"]]}),
        ),
        with(
            "scalingConfig",
            serde_json::json!({"concurrencyControl": ["FIXED"]}),
        ),
    ] {
        let r = app.register(spec.clone()).await;
        assert_eq!(r.status(), 400, "{spec}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "BAD_REQUEST", "{body}");
    }
    // Objects and nulls are read as before.
    let ok = with(
        "scalingConfig",
        serde_json::json!({"metrics": [null, {"type": "rps"}], "concurrencyControl": null}),
    );
    let mut ok = ok;
    ok["resources"] = serde_json::json!({"cpu": 1});
    let created = app.register_ok(ok).await;
    assert_eq!(
        created["resources"],
        serde_json::json!({"cpu": "1", "memory": null})
    );
    assert_eq!(
        created["scalingConfig"]["metrics"],
        serde_json::json!([null, {"type": "rps", "target": null, "query": null}])
    );

    // The callback's `error` likewise: an object, a message, or null; not an array.
    assert_eq!(
        app.callback("any", None, serde_json::json!({"error": [null, null]}))
            .await,
        400
    );
    assert_eq!(
        app.callback("any", None, serde_json::json!({"error": {}}))
            .await,
        204
    );
    assert_eq!(
        app.callback("any", None, serde_json::json!({"error": "boom"}))
            .await,
        204
    );
}

/// A 405 on `/v1/functions/{name}` listed `POST` in `Allow` for a bare name (where POST is 405)
/// and `GET, DELETE` for `{name}:invoke`; now `Allow` names the methods of the URL's resource.
#[tokio::test]
async fn method_not_allowed_on_a_function_url_lists_that_resources_methods() {
    let app = TestApp::spawn().await;
    let send = |method: &str, path: &str| {
        app.client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", app.base),
            )
            .send()
    };
    for (method, path, allow) in [
        ("POST", "/v1/functions/echo", "GET,HEAD,DELETE"),
        ("POST", "/v1/functions/echo:other", "GET,HEAD,DELETE"),
        ("PUT", "/v1/functions/echo", "GET,HEAD,DELETE"),
        ("OPTIONS", "/v1/functions/echo", "GET,HEAD,DELETE"),
        ("OPTIONS", "/v1/functions/echo:invoke", "POST"),
        ("PATCH", "/v1/functions/a:b:enqueue", "POST"),
    ] {
        let r = send(method, path).await.unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "405 METHOD_NOT_ALLOWED");
    }
    // Other routes keep the framework's `Allow`.
    let r = send("DELETE", "/v1/functions").await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET,HEAD,POST");
}

/// An integer given as a float just below 2^63 was refused: the bound was 9e18, and serde_json
/// rounded such floats up to 2^63 (now it parses them exactly, `float_roundtrip`).
#[tokio::test]
async fn integers_read_as_floats_up_to_the_i64_range() {
    let app = TestApp::spawn().await;
    let spec = r#"{"name": "big", "image": "i", "executionMode": "LOCAL",
        "scalingConfig": {"concurrencyControl": {"downscaleCooldownMs": 9.223372036854775e+18}}}"#;
    let r = app.post_raw("/v1/functions", spec).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["scalingConfig"]["concurrencyControl"]["downscaleCooldownMs"],
        9_223_372_036_854_774_784_i64
    );
    let too_big = r#"{"name": "big2", "image": "i", "executionMode": "LOCAL",
        "scalingConfig": {"concurrencyControl": {"downscaleCooldownMs": 9.3e18}}}"#;
    assert_eq!(app.post_raw("/v1/functions", too_big).await.status(), 400);
}
