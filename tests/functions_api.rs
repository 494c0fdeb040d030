//! Function API E1–E5 through HTTP (REFERENCE §1.5–1.9, §2.2–2.3, DECISIONS 2, 3, 8, 9).

mod common;

use common::TestApp;
use serde_json::{Value, json};

#[tokio::test]
async fn register_local_returns_the_exact_function_response() {
    let app = TestApp::spawn().await;
    let r = app
        .register(json!({"name":"echo","image":"local","executionMode":"LOCAL"}))
        .await;
    assert_eq!(r.status(), 201);
    let text = r.text().await.unwrap();
    assert_eq!(
        text,
        r#"{"name":"echo","image":"local","command":[],"env":{},"timeoutMs":30000,"concurrency":4,"queueSize":100,"maxRetries":3,"requestedExecutionMode":"LOCAL","effectiveExecutionMode":"LOCAL","runtimeMode":"HTTP"}"#
    );

    let got = app
        .client
        .get(format!("{}/v1/functions/echo", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), text);

    let list: Value = app.get_json("/v1/functions").await.1;
    assert_eq!(list, json!([serde_json::from_str::<Value>(&text).unwrap()]));
}

#[tokio::test]
async fn duplicate_registration_is_a_409_json_error_and_keeps_the_original() {
    let app = TestApp::spawn().await;
    app.local("echo").await;
    let r = app
        .register(json!({"name":"echo","image":"other","executionMode":"LOCAL","timeoutMs":5}))
        .await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "CONFLICT");
    assert!(body["message"].as_str().unwrap().contains("echo"));
    let f: Value = app.get_json("/v1/functions/echo").await.1;
    assert_eq!(f["image"], "local");
}

#[tokio::test]
async fn validation_errors_list_every_field() {
    let app = TestApp::spawn().await;
    let r = app
        .register(json!({"name":" ","concurrency":0,"queueSize":-1,"maxRetries":-2,"timeoutMs":0}))
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "VALIDATION_ERROR");
    assert_eq!(body["message"], "Request validation failed");
    let details: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    for expected in [
        "name: must not be blank",
        "image: must not be blank",
        "timeoutMs: must be greater than or equal to 1",
        "concurrency: must be greater than or equal to 1",
        "queueSize: must be greater than or equal to 1",
        "maxRetries: must be greater than or equal to 0",
    ] {
        assert!(
            details.contains(&expected),
            "{expected} missing from {details:?}"
        );
    }
}

#[tokio::test]
async fn names_must_match_the_published_pattern() {
    let app = TestApp::spawn().await;
    for bad in ["9lives", "has space", "a/b", "a:b", &"x".repeat(64)] {
        let r = app
            .register(json!({"name": bad, "image":"i","executionMode":"LOCAL"}))
            .await;
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "VALIDATION_ERROR");
        assert!(
            body["details"][0]
                .as_str()
                .unwrap()
                .starts_with("name: must match")
        );
    }
    let r = app
        .register(json!({"name":"Ok.name_1-x","image":"i","executionMode":"LOCAL"}))
        .await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn scaling_errors_are_400_before_the_duplicate_check() {
    let app = TestApp::spawn().await;
    app.register_ok(json!({"name":"f","image":"i","executionMode":"POOL","endpointUrl":"http://127.0.0.1:1/invoke"}))
        .await;
    for (scaling, message) in [
        (json!({"minReplicas":-1}), "minReplicas must be >= 0"),
        (json!({"maxReplicas":0}), "maxReplicas must be >= 1"),
        (
            json!({"minReplicas":3,"maxReplicas":2}),
            "minReplicas must be <= maxReplicas",
        ),
        (
            json!({"metrics":[{"type":"cpu","target":"50"}]}),
            "Unsupported INTERNAL scaling metric: cpu",
        ),
    ] {
        let r = app
            .register(json!({"name":"f","image":"i","scalingConfig": scaling}))
            .await;
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body, json!({"error":"BAD_REQUEST","message": message}));
    }
}

#[tokio::test]
async fn deployment_without_a_backend_degrades_to_pool_or_is_refused() {
    let app = TestApp::spawn().await;
    let r = app.register(json!({"name":"d","image":"img"})).await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "SERVICE_UNAVAILABLE");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("NANOFAAS_DEPLOYMENT_DEFAULT_BACKEND")
    );
    assert_eq!(app.get_json("/v1/functions/d").await.0, 404);

    let f = app
        .register_ok(json!({"name":"d","image":"img","endpointUrl":"http://127.0.0.1:9/invoke"}))
        .await;
    assert_eq!(f["requestedExecutionMode"], "DEPLOYMENT");
    assert_eq!(f["effectiveExecutionMode"], "POOL");
    assert_eq!(f["endpointUrl"], "http://127.0.0.1:9/invoke");
    assert!(f.get("deploymentBackend").is_none());
    assert!(
        f["degradationReason"]
            .as_str()
            .unwrap()
            .contains("No managed deployment provider")
    );
    assert_eq!(
        f["scalingConfig"],
        json!({"strategy":"INTERNAL","minReplicas":1,"maxReplicas":10,
            "metrics":[{"type":"queue_depth","target":"5","query":null}],
            "concurrencyControl":{"mode":"FIXED","targetInFlightPerPod":null,"minTargetInFlightPerPod":null,
              "maxTargetInFlightPerPod":null,"upscaleCooldownMs":null,"downscaleCooldownMs":null,
              "highLoadThreshold":null,"lowLoadThreshold":null}})
    );
}

#[tokio::test]
async fn concurrency_control_is_resolved_and_echoed() {
    let app = TestApp::spawn().await;
    let f = app
        .register_ok(json!({"name":"d","image":"img","endpointUrl":"http://127.0.0.1:9/invoke",
            "scalingConfig":{"concurrencyControl":{"mode":"STATIC_PER_POD","targetInFlightPerPod":50,
              "minTargetInFlightPerPod":10,"maxTargetInFlightPerPod":3}}}))
        .await;
    let cc = &f["scalingConfig"]["concurrencyControl"];
    assert_eq!(cc["mode"], "STATIC_PER_POD");
    assert_eq!(
        (
            cc["minTargetInFlightPerPod"].as_i64(),
            cc["maxTargetInFlightPerPod"].as_i64(),
            cc["targetInFlightPerPod"].as_i64()
        ),
        (Some(3), Some(3), Some(3))
    );
    assert_eq!(cc["highLoadThreshold"], 0.85);
}

#[tokio::test]
async fn get_and_delete_unknown_functions_are_404_json() {
    let app = TestApp::spawn().await;
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = app
            .client
            .request(method, format!("{}/v1/functions/ghost", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "NOT_FOUND");
    }
    let r = app
        .client
        .get(format!("{}/v1/functions/%20", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["details"], json!(["name: Function name is required"]));
}

#[tokio::test]
async fn delete_hides_the_function_and_removes_its_metrics() {
    let app = TestApp::spawn().await;
    app.local("echo").await;
    assert_eq!(app.invoke("echo", json!({"input":1})).await.status(), 200);
    assert_eq!(
        app.metric("function_dispatch_total", "echo").await,
        Some(1.0)
    );

    let r = app
        .client
        .delete(format!("{}/v1/functions/echo", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.content_length(), Some(0));
    assert_eq!(app.get_json("/v1/functions/echo").await.0, 404);
    assert_eq!(app.invoke("echo", json!({"input":1})).await.status(), 404);
    let scrape = app.scrape().await;
    assert!(!scrape.contains("function=\"echo\""), "{scrape}");

    // Registered again, it starts from zero.
    app.local("echo").await;
    assert_eq!(app.invoke("echo", json!({"input":1})).await.status(), 200);
    assert_eq!(
        app.metric("function_dispatch_total", "echo").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn replicas_endpoint_semantics_for_non_deployment_functions() {
    let app = TestApp::spawn().await;
    app.local("echo").await;
    let put = |name: &str, body: Value| {
        app.client
            .put(format!("{}/v1/functions/{name}/replicas", app.base))
            .json(&body)
            .send()
    };
    let r = put("echo", json!({"replicas": 2})).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error":"BAD_REQUEST","message":"Function 'echo' is not in DEPLOYMENT mode"})
    );
    assert_eq!(
        put("ghost", json!({"replicas": 2})).await.unwrap().status(),
        404
    );
    let r = put("echo", json!({"replicas": -1})).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["details"],
        json!(["replicas: must be greater than or equal to 0"])
    );
    let r = put("echo", json!({})).await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["details"],
        json!(["replicas: must not be null"])
    );

    // Degraded DEPLOYMENT functions run as POOL: not scalable either.
    app.register_ok(json!({"name":"d","image":"img","endpointUrl":"http://127.0.0.1:9/invoke"}))
        .await;
    assert_eq!(
        put("d", json!({"replicas": 0})).await.unwrap().status(),
        400
    );
}

#[tokio::test]
async fn pool_endpoints_outside_the_allowed_hosts_are_refused() {
    let app =
        TestApp::with_env(&[("NANOFAAS_POOL_ALLOWED_HOSTS", "10.0.0.0/8,runtime.internal")]).await;
    let r = app
        .register(json!({"name":"p","image":"i","executionMode":"POOL","endpointUrl":"http://127.0.0.1:8080/invoke"}))
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["details"][0]
            .as_str()
            .unwrap()
            .contains("NANOFAAS_POOL_ALLOWED_HOSTS")
    );
    for url in [
        "http://10.1.2.3:8080/invoke",
        "http://runtime.internal/invoke",
    ] {
        let r = app
            .register(json!({"name": format!("p{}", url.len()),"image":"i","executionMode":"POOL","endpointUrl": url}))
            .await;
        assert_eq!(r.status(), 201, "{url}");
    }
}

#[tokio::test]
async fn re_registering_a_get_result_is_accepted() {
    let app = TestApp::spawn().await;
    let mut f = app
        .register_ok(json!({"name":"a","image":"i","executionMode":"LOCAL"}))
        .await;
    f["name"] = json!("b");
    let r = app.register(f).await;
    assert_eq!(r.status(), 201);
}
