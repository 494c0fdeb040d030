//! Bearer-token authentication through the real HTTP surface: off by default, and with each
//! protection on (API scopes, the scrape, callbacks), reloading the token file without a restart.

mod common;

use std::path::PathBuf;

use common::TestApp;
use nanofaas_control_plane::auth::Reloaded;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

const ADMIN: &str = "admin-secret-1";
const INVOKE: &str = "invoke-secret-1";
const METRICS: &str = "metrics-secret-1";
const CALLBACK: &str = "callback-secret-1";

fn sha256_hex(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A token file in the temp directory, removed when dropped.
struct TokenFile(PathBuf);

impl TokenFile {
    fn new(entries: &[(&str, &str)]) -> TokenFile {
        let file =
            TokenFile(std::env::temp_dir().join(format!("nanofaas-auth-{}", uuid::Uuid::new_v4())));
        file.write(entries);
        file
    }

    fn write(&self, entries: &[(&str, &str)]) {
        let mut text = String::from("# test tokens\n");
        for (secret, scopes) in entries {
            text.push_str(&format!("{} {scopes} test\n", sha256_hex(secret)));
        }
        std::fs::write(&self.0, text).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn all_tokens() -> TokenFile {
    TokenFile::new(&[
        (ADMIN, "admin"),
        (INVOKE, "invoke"),
        (METRICS, "metrics"),
        (CALLBACK, "callback"),
    ])
}

/// One request with an optional bearer token: status, `WWW-Authenticate` and the JSON body.
async fn call(
    app: &TestApp,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut request = app.client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        challenge,
        response.json().await.unwrap_or(Value::Null),
    )
}

fn local_spec(name: &str) -> Value {
    json!({"name": name, "image": "local", "executionMode": "LOCAL"})
}

#[tokio::test]
async fn off_by_default_every_route_answers_without_a_header() {
    let app = TestApp::with_env(&[
        ("NANOFAAS_ADMIN_RUNTIME_CONFIG_ENABLED", "true"),
        ("NANOFAAS_ASYNC_QUEUE_ENABLED", "true"),
    ])
    .await;
    assert!(app.state.auth.is_none());
    let b = &app.base;
    let checks = [
        (
            Method::POST,
            format!("{b}/v1/functions"),
            Some(local_spec("f")),
            201,
        ),
        (Method::GET, format!("{b}/v1/functions"), None, 200),
        (Method::GET, format!("{b}/v1/functions/f"), None, 200),
        (
            Method::POST,
            format!("{b}/v1/functions/f:invoke"),
            Some(json!({"input": 1})),
            200,
        ),
        (
            Method::POST,
            format!("{b}/v1/functions/f:enqueue"),
            Some(json!({"input": 1})),
            202,
        ),
        (
            Method::GET,
            format!("{b}/v1/admin/runtime-config"),
            None,
            200,
        ),
        (
            Method::GET,
            format!("{b}/modules/build-metadata"),
            None,
            200,
        ),
        (
            Method::POST,
            format!("{b}/v1/internal/executions/none:complete"),
            Some(json!({"success": true})),
            204,
        ),
        (
            Method::GET,
            format!("{}/actuator/prometheus", app.management),
            None,
            200,
        ),
        (Method::DELETE, format!("{b}/v1/functions/f"), None, 204),
    ];
    for (method, url, body, expected) in checks {
        let (status, challenge, _) = call(&app, method.clone(), &url, None, body).await;
        assert_eq!(status, expected, "{method} {url}");
        assert_eq!(challenge, None, "{method} {url}");
    }
}

#[tokio::test]
async fn on_a_missing_or_unknown_token_is_401_with_a_bearer_challenge() {
    let tokens = all_tokens();
    let app = TestApp::with_env(&[
        ("NANOFAAS_AUTH_ENABLED", "true"),
        ("NANOFAAS_AUTH_TOKENS_FILE", tokens.path()),
    ])
    .await;
    let url = format!("{}/v1/functions", app.base);
    let (status, challenge, body) = call(&app, Method::GET, &url, None, None).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="nanofaas""#));
    assert_eq!(
        body,
        json!({"error": "UNAUTHORIZED", "message": "Authentication required: send Authorization: Bearer <token>"})
    );

    let (status, challenge, body) = call(&app, Method::GET, &url, Some("guess"), None).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge.as_deref(),
        Some(r#"Bearer realm="nanofaas", error="invalid_token""#)
    );
    assert_eq!(
        body,
        json!({"error": "UNAUTHORIZED", "message": "Invalid bearer token"})
    );

    // Other schemes, an empty token, and two Authorization headers are no bearer token.
    for headers in [
        vec![format!("Basic {ADMIN}")],
        vec!["Bearer ".to_owned()],
        vec![format!("Bearer {ADMIN}"), format!("Bearer {ADMIN}")],
    ] {
        let mut request = app.client.get(&url);
        for h in &headers {
            request = request.header(header::AUTHORIZATION, h);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{headers:?}");
    }
    // The scheme is case-insensitive.
    let r = app
        .client
        .get(&url)
        .header(header::AUTHORIZATION, format!("bearer {INVOKE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // An unknown route reveals nothing without a token, and is a plain 404 with one.
    let missing = format!("{}/v1/nothing-here", app.base);
    assert_eq!(call(&app, Method::GET, &missing, None, None).await.0, 401);
    assert_eq!(
        call(&app, Method::GET, &missing, Some(INVOKE), None)
            .await
            .0,
        404
    );
    // Health stays open.
    for path in [
        "/actuator/health",
        "/actuator/health/readiness",
        "/actuator/prometheus",
    ] {
        let r = app
            .client
            .get(format!("{}{path}", app.management))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn on_each_route_needs_the_scope_of_what_it_does() {
    let tokens = all_tokens();
    let app = TestApp::with_env(&[
        ("NANOFAAS_AUTH_ENABLED", "true"),
        ("NANOFAAS_AUTH_TOKENS_FILE", tokens.path()),
        ("NANOFAAS_ADMIN_RUNTIME_CONFIG_ENABLED", "true"),
        ("NANOFAAS_ASYNC_QUEUE_ENABLED", "true"),
    ])
    .await;
    let b = &app.base;
    let forbidden = |scope: &str| json!({"error": "FORBIDDEN", "message": format!("This operation needs a token with the {scope} scope")});

    // Admin routes: the invoke (and metrics) token is refused, the admin token works.
    let register = format!("{b}/v1/functions");
    for token in [INVOKE, METRICS, CALLBACK] {
        let (status, challenge, body) = call(
            &app,
            Method::POST,
            &register,
            Some(token),
            Some(local_spec("f")),
        )
        .await;
        assert_eq!((status, body), (403, forbidden("admin")), "{token}");
        assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer realm="nanofaas", error="insufficient_scope""#)
        );
    }
    let (status, _, _) = call(
        &app,
        Method::POST,
        &register,
        Some(ADMIN),
        Some(local_spec("f")),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _, _) = call(
        &app,
        Method::POST,
        &register,
        Some(ADMIN),
        Some(local_spec("g")),
    )
    .await;
    assert_eq!(status, 201);

    let config_url = format!("{b}/v1/admin/runtime-config");
    let patch = json!({"expectedRevision": 0, "rateMaxPerSecond": 1});
    let (status, _, body) = call(
        &app,
        Method::PATCH,
        &config_url,
        Some(INVOKE),
        Some(patch.clone()),
    )
    .await;
    assert_eq!((status, body), (403, forbidden("admin")));
    let (status, _, snapshot) = call(&app, Method::GET, &config_url, Some(ADMIN), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        snapshot["rateMaxPerSecond"], 1000,
        "the refused patch changed nothing"
    );

    let replicas = format!("{b}/v1/functions/f/replicas");
    let (status, _, _) = call(
        &app,
        Method::PUT,
        &replicas,
        Some(INVOKE),
        Some(json!({"replicas": 2})),
    )
    .await;
    assert_eq!(status, 403);
    // With the admin token the request reaches the handler (f is LOCAL, not DEPLOYMENT: 400).
    let (status, _, _) = call(
        &app,
        Method::PUT,
        &replicas,
        Some(ADMIN),
        Some(json!({"replicas": 2})),
    )
    .await;
    assert_eq!(status, 400);

    // Invoke routes: the admin token is refused, the invoke token works.
    let invoke = format!("{b}/v1/functions/f:invoke");
    let enqueue = format!("{b}/v1/functions/f:enqueue");
    for url in [&invoke, &enqueue] {
        let (status, _, body) = call(
            &app,
            Method::POST,
            url,
            Some(ADMIN),
            Some(json!({"input": 1})),
        )
        .await;
        assert_eq!((status, body), (403, forbidden("invoke")), "{url}");
    }
    let (status, _, result) = call(
        &app,
        Method::POST,
        &invoke,
        Some(INVOKE),
        Some(json!({"input": 1})),
    )
    .await;
    assert_eq!((status, &result["status"]), (200, &json!("success")));
    let (status, _, queued) = call(
        &app,
        Method::POST,
        &enqueue,
        Some(INVOKE),
        Some(json!({"input": 2})),
    )
    .await;
    assert_eq!(status, 202);
    for id in [&result["executionId"], &queued["executionId"]] {
        let url = format!("{b}/v1/executions/{}", id.as_str().unwrap());
        assert_eq!(
            call(&app, Method::GET, &url, Some(ADMIN), None).await.0,
            403
        );
        assert_eq!(call(&app, Method::GET, &url, None, None).await.0, 401);
        assert_eq!(
            call(&app, Method::GET, &url, Some(INVOKE), None).await.0,
            200
        );
    }

    // Dead letters take the invoke scope: listing, and a redrive (of a success here: 409 once
    // past the guard).
    let listing = format!("{b}/v1/functions/f/executions");
    let redrive = format!(
        "{b}/v1/executions/{}:redrive",
        queued["executionId"].as_str().unwrap()
    );
    for (method, url, allowed) in [(Method::GET, &listing, 200), (Method::POST, &redrive, 409)] {
        assert_eq!(call(&app, method.clone(), url, None, None).await.0, 401);
        assert_eq!(
            call(&app, method.clone(), url, Some(ADMIN), None).await.0,
            403
        );
        assert_eq!(
            call(&app, method.clone(), url, Some(INVOKE), None).await.0,
            allowed,
            "{method} {url}"
        );
    }

    // Reading function definitions takes either scope, not the metrics one.
    for token in [ADMIN, INVOKE] {
        assert_eq!(
            call(&app, Method::GET, &register, Some(token), None)
                .await
                .0,
            200
        );
        let url = format!("{b}/v1/functions/f");
        assert_eq!(
            call(&app, Method::GET, &url, Some(token), None).await.0,
            200
        );
    }
    let (status, _, body) = call(&app, Method::GET, &register, Some(METRICS), None).await;
    assert_eq!((status, body), (403, forbidden("admin or invoke")));

    // Deletion is admin.
    let delete = format!("{b}/v1/functions/g");
    assert_eq!(
        call(&app, Method::DELETE, &delete, Some(INVOKE), None)
            .await
            .0,
        403
    );
    assert_eq!(
        call(&app, Method::DELETE, &delete, Some(ADMIN), None)
            .await
            .0,
        204
    );

    // Callbacks are not behind the API tokens unless configured.
    let callback = format!("{b}/v1/internal/executions/none:complete");
    let (status, _, _) = call(
        &app,
        Method::POST,
        &callback,
        None,
        Some(json!({"success": true})),
    )
    .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn the_scrape_is_protected_only_when_configured() {
    let tokens = all_tokens();
    // Only the scrape: the API stays open.
    let app = TestApp::with_env(&[
        ("NANOFAAS_AUTH_METRICS_PROTECTED", "true"),
        ("NANOFAAS_AUTH_TOKENS_FILE", tokens.path()),
    ])
    .await;
    let scrape = format!("{}/actuator/prometheus", app.management);
    let (status, challenge, body) = call(&app, Method::GET, &scrape, None, None).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="nanofaas""#));
    assert_eq!(body["error"], "UNAUTHORIZED");
    assert_eq!(
        call(&app, Method::GET, &scrape, Some(ADMIN), None).await.0,
        403
    );
    let r = app
        .client
        .get(&scrape)
        .bearer_auth(METRICS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("# TYPE "));
    let health = format!("{}/actuator/health", app.management);
    assert_eq!(call(&app, Method::GET, &health, None, None).await.0, 200);
    app.local("open").await;

    // API protection alone leaves the scrape open.
    let app = TestApp::with_env(&[
        ("NANOFAAS_AUTH_ENABLED", "true"),
        ("NANOFAAS_AUTH_TOKENS_FILE", tokens.path()),
    ])
    .await;
    let scrape = format!("{}/actuator/prometheus", app.management);
    assert_eq!(call(&app, Method::GET, &scrape, None, None).await.0, 200);
}

#[tokio::test]
async fn callbacks_need_the_callback_scope_when_protected() {
    let tokens = all_tokens();
    let app = TestApp::with_env(&[
        ("NANOFAAS_AUTH_CALLBACKS_PROTECTED", "true"),
        ("NANOFAAS_AUTH_TOKENS_FILE", tokens.path()),
    ])
    .await;
    let callback = format!("{}/v1/internal/executions/none:complete", app.base);
    let body = Some(json!({"success": true}));
    assert_eq!(
        call(&app, Method::POST, &callback, None, body.clone())
            .await
            .0,
        401
    );
    assert_eq!(
        call(&app, Method::POST, &callback, Some(ADMIN), body.clone())
            .await
            .0,
        403
    );
    assert_eq!(
        call(&app, Method::POST, &callback, Some(CALLBACK), body)
            .await
            .0,
        204
    );
    // The rest of the API stays open.
    app.local("open").await;
}

#[tokio::test]
async fn a_new_token_file_takes_effect_without_a_restart() {
    let tokens = TokenFile::new(&[(ADMIN, "admin")]);
    let app = TestApp::with_env(&[
        ("NANOFAAS_AUTH_ENABLED", "true"),
        ("NANOFAAS_AUTH_TOKENS_FILE", tokens.path()),
    ])
    .await;
    let store = app.state.auth.clone().expect("auth is on");
    let list = format!("{}/v1/functions", app.base);
    assert_eq!(
        call(&app, Method::GET, &list, Some(ADMIN), None).await.0,
        200
    );

    // Rotation: the old admin token goes, a new one comes.
    tokens.write(&[("admin-secret-2", "admin")]);
    assert_eq!(store.reload().await, Ok(Reloaded::Replaced { tokens: 1 }));
    assert_eq!(
        call(&app, Method::GET, &list, Some(ADMIN), None).await.0,
        401
    );
    assert_eq!(
        call(&app, Method::GET, &list, Some("admin-secret-2"), None)
            .await
            .0,
        200
    );

    // A broken file is refused and the tokens in force stay.
    std::fs::write(&tokens.0, "admin-secret-3 admin\n").unwrap();
    assert!(store.reload().await.is_err());
    assert_eq!(
        call(&app, Method::GET, &list, Some("admin-secret-2"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&app, Method::GET, &list, Some("admin-secret-3"), None)
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn a_missing_token_file_stops_the_start() {
    let config = nanofaas_control_plane::config::Config::from_lookup(|k| match k {
        "NANOFAAS_AUTH_ENABLED" => Some("true".into()),
        "NANOFAAS_AUTH_TOKENS_FILE" => Some("/nonexistent/nanofaas-tokens".into()),
        _ => None,
    })
    .unwrap();
    let error = nanofaas_control_plane::App::build(config)
        .err()
        .expect("refused");
    assert!(
        format!("{error:#}").contains("/nonexistent/nanofaas-tokens"),
        "{error:#}"
    );
}

#[tokio::test]
async fn both_listeners_apply_their_protection_when_callbacks_have_their_own_port() {
    let tokens = all_tokens();
    let app = TestApp::with_env(&[
        ("NANOFAAS_AUTH_ENABLED", "true"),
        ("NANOFAAS_AUTH_CALLBACKS_PROTECTED", "true"),
        ("NANOFAAS_AUTH_TOKENS_FILE", tokens.path()),
        ("NANOFAAS_CALLBACK_SERVER_PORT", "0"),
        ("NANOFAAS_CALLBACK_SERVER_ADDRESS", "127.0.0.1"),
    ])
    .await;
    let callbacks = app.callbacks.clone().expect("callback listener bound");
    let callback = format!("{callbacks}/v1/internal/executions/none:complete");
    let body = Some(json!({"success": true}));
    let (status, challenge, _) = call(&app, Method::POST, &callback, None, body.clone()).await;
    assert_eq!((status, challenge.is_some()), (401, true));
    assert_eq!(
        call(&app, Method::POST, &callback, Some(INVOKE), body.clone())
            .await
            .0,
        403
    );
    assert_eq!(
        call(&app, Method::POST, &callback, Some(CALLBACK), body)
            .await
            .0,
        204
    );
    // The API port: its own scopes, and no callback route any more.
    let functions = format!("{}/v1/functions", app.base);
    assert_eq!(call(&app, Method::GET, &functions, None, None).await.0, 401);
    assert_eq!(
        call(&app, Method::GET, &functions, Some(INVOKE), None)
            .await
            .0,
        200
    );
    // An API token learns the route is not there; a callback token is no API token (403).
    let on_api = format!("{}/v1/internal/executions/none:complete", app.base);
    assert_eq!(
        call(&app, Method::POST, &on_api, Some(CALLBACK), Some(json!({})))
            .await
            .0,
        403
    );
    assert_eq!(
        call(&app, Method::POST, &on_api, Some(INVOKE), Some(json!({})))
            .await
            .0,
        404
    );
}
