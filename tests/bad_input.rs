//! Bad input never panics and always gets a 4xx JSON error; the server stays healthy
//! (REFERENCE §1.4, DECISIONS 2). Also the LOCAL invoke path and its valid edge inputs.

mod common;

use common::TestApp;
use serde_json::{Value, json};

async fn expect_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "not JSON"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].is_string());
    let text = body.to_string();
    assert!(
        !text.contains("panicked") && !text.contains("serde::"),
        "{text}"
    );
    body
}

#[tokio::test]
async fn invoke_bodies_that_are_not_invocation_requests() {
    let app = TestApp::spawn().await;
    app.local("echo").await;
    let url = format!("{}/v1/functions/echo:invoke", app.base);
    let post = |body: &'static str, content_type: Option<&'static str>| {
        let mut req = app.client.post(&url).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let json_ct = Some("application/json");
    expect_error(post("{oops", json_ct).await.unwrap(), 400, "BAD_REQUEST").await;
    let b = expect_error(post("", json_ct).await.unwrap(), 400, "BAD_REQUEST").await;
    assert_eq!(b["message"], "No request body");
    expect_error(post("[1,2]", json_ct).await.unwrap(), 400, "BAD_REQUEST").await;
    expect_error(
        post("\"input\"", json_ct).await.unwrap(),
        400,
        "BAD_REQUEST",
    )
    .await;
    // Unknown fields are ignored, as Jackson ignored them for the Java service (§1.3).
    let r = post(r#"{"input":1,"inptu":2}"#, json_ct).await.unwrap();
    assert_eq!(r.status(), 200);
    expect_error(
        post(r#"{"input":1,"metadata":{"a":{"b":1}}}"#, json_ct)
            .await
            .unwrap(),
        400,
        "VALIDATION_ERROR",
    )
    .await;
    expect_error(
        post(r#"{"input":1,"metadata":[]}"#, json_ct).await.unwrap(),
        400,
        "VALIDATION_ERROR",
    )
    .await;
    for missing in ["{}", r#"{"input":null}"#, r#"{"metadata":null}"#] {
        let b = expect_error(
            post(missing, json_ct).await.unwrap(),
            400,
            "VALIDATION_ERROR",
        )
        .await;
        assert_eq!(b["details"], json!(["input: Input payload is required"]));
    }
    expect_error(
        post(r#"{"input":1}"#, None).await.unwrap(),
        415,
        "415 UNSUPPORTED_MEDIA_TYPE",
    )
    .await;
    expect_error(
        post(r#"{"input":1}"#, Some("text/plain")).await.unwrap(),
        415,
        "415 UNSUPPORTED_MEDIA_TYPE",
    )
    .await;
    // `+json` media types and charsets are fine.
    assert_eq!(
        post(
            r#"{"input":1}"#,
            Some("application/vnd.x+json; charset=utf-8")
        )
        .await
        .unwrap()
        .status(),
        200
    );
}

#[tokio::test]
async fn falsy_inputs_are_valid_and_echoed_exactly() {
    let app = TestApp::spawn().await;
    app.local("echo").await;
    for input in [
        json!(false),
        json!(0),
        json!(""),
        json!([]),
        json!({}),
        json!({"z": 1, "a": [true, null]}),
    ] {
        let r = app.invoke("echo", json!({"input": input.clone()})).await;
        assert_eq!(r.status(), 200);
        let id = r.headers()["X-Execution-Id"].to_str().unwrap().to_owned();
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body,
            json!({"executionId": id, "status": "success", "output": input, "error": null})
        );
    }
    // Key order of the input is preserved in the output.
    let text = app
        .post_raw("/v1/functions/echo:invoke", r#"{"input":{"z":1,"a":2}}"#)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains(r#""output":{"z":1,"a":2}"#), "{text}");
    // Whitespace is dropped from the echo, as Java writes compact JSON.
    let text = app
        .post_raw(
            "/v1/functions/echo:invoke",
            "{\"input\": { \"z\" :\n 1, \"s\": \"a b\" } }",
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains(r#""output":{"z":1,"s":"a b"}"#), "{text}");
}

#[tokio::test]
async fn huge_bodies_are_413() {
    let app = TestApp::with_env(&[("NANOFAAS_HTTP_MAX_REQUEST_BODY_MB", "1")]).await;
    app.local("echo").await;
    let big = format!(r#"{{"input":"{}"}}"#, "x".repeat(2 << 20));
    let r = app.post_raw("/v1/functions/echo:invoke", big.clone()).await;
    expect_error(r, 413, "PAYLOAD_TOO_LARGE").await;
    let r = app.post_raw("/v1/functions", big).await;
    expect_error(r, 413, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(app.invoke("echo", json!({"input": 1})).await.status(), 200);
}

#[tokio::test]
async fn bad_headers_are_400() {
    let app = TestApp::spawn().await;
    app.local("echo").await;
    for value in ["abc", "1.5", ""] {
        let r = app
            .invoke_request("echo")
            .header("X-Timeout-Ms", value)
            .json(&json!({"input": 1}))
            .send()
            .await
            .unwrap();
        let b = expect_error(r, 400, "BAD_REQUEST").await;
        assert_eq!(b["message"], "X-Timeout-Ms must be an integer");
    }
    let r = app
        .invoke_request("echo")
        .header(
            "X-Trace-Id",
            reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        )
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "BAD_REQUEST").await;
}

#[tokio::test]
async fn registration_bodies_of_the_wrong_shape() {
    let app = TestApp::spawn().await;
    for (body, status, code) in [
        ("{oops", 400, "BAD_REQUEST"),
        ("", 400, "BAD_REQUEST"),
        ("[]", 400, "BAD_REQUEST"),
        (
            r#"{"name":"f","image":"i","timeoutMs":"soon"}"#,
            400,
            "BAD_REQUEST",
        ),
        (
            r#"{"name":"f","image":"i","executionMode":"local"}"#,
            400,
            "BAD_REQUEST",
        ),
        (
            r#"{"name":"f","image":"i","env":{"A":[1]}}"#,
            400,
            "BAD_REQUEST",
        ),
        (
            r#"{"name":"f","image":"i","scalingConfig":"x"}"#,
            400,
            "BAD_REQUEST",
        ),
        (
            r#"{"name":"f","image":"i","scalingConfig":{"minReplicas":"x"}}"#,
            400,
            "BAD_REQUEST",
        ),
        (
            r#"{"name":"f","image":"i","executionMode":"POOL","endpointUrl":"not a url"}"#,
            400,
            "VALIDATION_ERROR",
        ),
    ] {
        let r = app.post_raw("/v1/functions", body).await;
        let b = expect_error(r, status, code).await;
        // DECISIONS 2: serde's messages name Rust types (`struct ScalingConfig`); ours never do.
        let message = b["message"].as_str().unwrap();
        assert!(
            !message.contains("struct") && !message.contains("enum "),
            "{message}"
        );
    }
    // Read as Jackson reads it for the Java control plane (REFERENCE §1.3): unknown fields are
    // ignored (a typo like `timeoutMS` keeps the default) and scalars are coerced.
    let r = app
        .register(json!({
            "name": "f", "image": "i", "executionMode": "LOCAL",
            "timeoutMs": "1500", "concurrency": 2.0, "queueSize": 7.9, "timeoutMS": 5,
            "createdAt": "2026-01-01T00:00:00Z", "resources": {"cpu": 1, "gpu": "1"},
            "env": {"A": 1, "B": true, "C": "c"}, "command": ["run", 2],
        }))
        .await;
    assert_eq!(r.status(), 201);
    let f: Value = r.json().await.unwrap();
    assert_eq!(
        (
            f["timeoutMs"].as_i64(),
            f["concurrency"].as_i64(),
            f["queueSize"].as_i64()
        ),
        (Some(1500), Some(2), Some(7))
    );
    assert_eq!(f["env"], json!({"A": "1", "B": "true", "C": "c"}));
    assert_eq!(f["command"], json!(["run", "2"]));
    assert_eq!(f["resources"], json!({"cpu": "1", "memory": null}));
    assert!(f.get("createdAt").is_none(), "{f}");
    // The invocation and replicas bodies ignore unknown fields too.
    let r = app
        .invoke_request("f")
        .json(&json!({"input": 1, "extra": {"a": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["output"], json!(1));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let app = TestApp::spawn().await;
    app.local("echo").await;
    let body = Some(json!({"input": 1}));
    use reqwest::Method;
    let cases: [(Method, &str, Option<Value>, u16, &str); 9] = [
        // Errors the Java service left to Spring keep Spring's `"<code> <REASON>"` (REFERENCE §1.4).
        (Method::GET, "/v1/nothing", None, 404, "404 NOT_FOUND"),
        (Method::GET, "/v1/functions/", None, 404, "404 NOT_FOUND"),
        (Method::GET, "/actuator/health", None, 404, "404 NOT_FOUND"),
        (
            Method::PATCH,
            "/v1/functions",
            None,
            405,
            "405 METHOD_NOT_ALLOWED",
        ),
        (
            Method::PUT,
            "/v1/executions/x",
            None,
            405,
            "405 METHOD_NOT_ALLOWED",
        ),
        (
            Method::POST,
            "/v1/functions/echo:explode",
            body.clone(),
            405,
            "405 METHOD_NOT_ALLOWED",
        ),
        // A GET on an action path is a lookup of a function with that name.
        (
            Method::GET,
            "/v1/functions/echo:invoke",
            None,
            404,
            "NOT_FOUND",
        ),
        (
            Method::POST,
            "/v1/functions/ghost:invoke",
            body,
            404,
            "NOT_FOUND",
        ),
        (Method::GET, "/v1/executions/ghost", None, 404, "NOT_FOUND"),
    ];
    for (method, path, body, status, code) in cases {
        let mut request = app.client.request(method, format!("{}{path}", app.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        expect_error(request.send().await.unwrap(), status, code).await;
    }
    let b = expect_error(
        app.client
            .get(format!("{}/v1/nothing", app.base))
            .send()
            .await
            .unwrap(),
        404,
        "404 NOT_FOUND",
    )
    .await;
    assert_eq!(b["message"], "No static resource v1/nothing.");
    for (method, path, status, code) in [
        (
            Method::POST,
            "/actuator/prometheus",
            405,
            "405 METHOD_NOT_ALLOWED",
        ),
        (Method::GET, "/v1/functions", 404, "404 NOT_FOUND"),
    ] {
        let r = app
            .client
            .request(method, format!("{}{path}", app.management))
            .send()
            .await
            .unwrap();
        expect_error(r, status, code).await;
    }
    let b = expect_error(
        app.client
            .get(format!("{}/v1/executions/%20", app.base))
            .send()
            .await
            .unwrap(),
        400,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(
        b["details"],
        json!(["executionId: Execution ID is required"])
    );
    // Still healthy.
    assert_eq!(app.invoke("echo", json!({"input": 1})).await.status(), 200);
    let health = app
        .client
        .get(format!("{}/actuator/health", app.management))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn names_with_colons_are_split_at_the_last_colon() {
    let app = TestApp::spawn().await;
    let r = app
        .client
        .post(format!("{}/v1/functions/a:b:invoke", app.base))
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap();
    let b = expect_error(r, 404, "NOT_FOUND").await;
    assert!(b["message"].as_str().unwrap().ends_with("a:b"), "{b}");
}
