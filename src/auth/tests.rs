use std::time::Duration;

use axum::http::Method;

use super::*;

fn sha256_hex(secret: &str) -> String {
    digest::digest(&digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_token_file_lists_digests_with_scopes_and_comments() {
    let text = format!(
        "# deployers\n\n{}  admin,invoke  ci # rotated monthly\n{} metrics\n  {} callback\n",
        sha256_hex("s3cret-admin"),
        sha256_hex("prom").to_uppercase(),
        sha256_hex("cb"),
    );
    let tokens = TokenSet::parse(&text).unwrap();
    assert_eq!(tokens.len(), 3);
    assert_eq!(
        tokens.scopes_of(b"s3cret-admin"),
        Some(Scopes::of(&[Scope::Admin, Scope::Invoke]))
    );
    assert_eq!(
        tokens.scopes_of(b"prom"),
        Some(Scopes::of(&[Scope::Metrics]))
    );
    assert_eq!(
        tokens.scopes_of(b"cb"),
        Some(Scopes::of(&[Scope::Callback]))
    );
    assert_eq!(tokens.scopes_of(b"s3cret-admin "), None);
    assert_eq!(tokens.scopes_of(b""), None);
    assert!(TokenSet::parse("# nothing yet\n").unwrap().is_empty());
}

#[test]
fn a_bad_line_is_named_without_its_content() {
    let digest = sha256_hex("x");
    let cases = [
        (
            "plaintext-secret admin".to_owned(),
            "line 1: the first field",
        ),
        (digest[..63].to_owned(), "line 1: the first field"),
        (digest.clone(), "line 1: no scopes"),
        (format!("{digest} ,"), "line 1: no scopes"),
        (
            format!("{digest} admin,plaintext-secret"),
            "line 1: unknown scope",
        ),
        (format!("{digest} admin name extra"), "line 1: expected"),
        (
            format!("{digest} admin\n\n{digest} invoke"),
            "line 3: the same digest as line 1",
        ),
    ];
    for (text, expected) in cases {
        let message = TokenSet::parse(&text).unwrap_err().to_string();
        assert!(message.starts_with(expected), "{text:?}: {message}");
        assert!(!message.contains("plaintext-secret"), "{message}");
        assert!(!message.contains(&digest[..16]), "{message}");
    }
    assert!(
        format!("{:?}", TokenSet::parse(&format!("{digest} admin")).unwrap())
            .ends_with("(1 tokens)")
    );
}

#[test]
fn the_api_routes_need_the_scope_of_what_they_do() {
    let on = Protected {
        api: true,
        callbacks: false,
    };
    let admin = Access::Scope(Scope::Admin);
    let invoke = Access::Scope(Scope::Invoke);
    let any = Access::AdminOrInvoke;
    let cases = [
        (Method::POST, Some("/v1/functions"), admin),
        (Method::GET, Some("/v1/functions"), any),
        (Method::GET, Some("/v1/functions/{name}"), any),
        (Method::HEAD, Some("/v1/functions/{name}"), any),
        (Method::DELETE, Some("/v1/functions/{name}"), admin),
        (Method::POST, Some("/v1/functions/{name}"), invoke),
        (Method::PUT, Some("/v1/functions/{name}/replicas"), admin),
        (Method::GET, Some("/v1/functions/{name}/replicas"), any),
        (Method::GET, Some("/v1/executions/{id}"), invoke),
        // Dead letters (issue 11): listing and `{id}:redrive`.
        (Method::GET, Some("/v1/functions/{name}/executions"), invoke),
        (Method::POST, Some("/v1/functions/{name}/executions"), any),
        (Method::POST, Some("/v1/executions/{id}"), invoke),
        (Method::GET, Some("/v1/admin/runtime-config"), admin),
        (Method::PATCH, Some("/v1/admin/runtime-config"), admin),
        (
            Method::POST,
            Some("/v1/admin/runtime-config/validate"),
            admin,
        ),
        (Method::GET, Some("/modules/build-metadata"), any),
        (
            Method::POST,
            Some("/v1/internal/executions/{id}"),
            Access::Open,
        ),
        (Method::GET, Some("/v1/some/new/route"), admin),
        (Method::GET, None, any),
    ];
    for (method, route, expected) in cases {
        assert_eq!(
            api_access(&method, route, &on),
            expected,
            "{method} {route:?}"
        );
        let off = Protected::default();
        assert_eq!(
            api_access(&method, route, &off),
            Access::Open,
            "{method} {route:?}"
        );
    }
    let callbacks_only = Protected {
        api: false,
        callbacks: true,
    };
    assert_eq!(
        api_access(
            &Method::POST,
            Some("/v1/internal/executions/{id}"),
            &callbacks_only
        ),
        Access::Scope(Scope::Callback)
    );
    assert_eq!(
        api_access(&Method::POST, Some("/v1/functions"), &callbacks_only),
        Access::Open
    );
    assert_eq!(
        management_access(&Method::GET, Some("/actuator/prometheus"), &on),
        Access::Scope(Scope::Metrics)
    );
    assert_eq!(
        management_access(&Method::GET, Some("/actuator/health"), &on),
        Access::Open
    );
}

struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(content: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("nanofaas-tokens-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, content).unwrap();
        TempFile(path)
    }

    fn write(&self, content: &str) {
        std::fs::write(&self.0, content).unwrap();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn a_reload_replaces_the_tokens_and_a_bad_file_keeps_them() {
    let file = TempFile::new(&format!("{} admin\n", sha256_hex("old")));
    let store = TokenStore::load(&file.0).unwrap();
    assert_eq!(store.reload().await, Ok(Reloaded::Unchanged));

    file.write(&format!("{} invoke\n", sha256_hex("new")));
    assert_eq!(store.reload().await, Ok(Reloaded::Replaced { tokens: 1 }));
    assert_eq!(store.scopes_of("old"), None);
    assert_eq!(store.scopes_of("new"), Some(Scopes::of(&[Scope::Invoke])));

    file.write("not a digest\n");
    assert!(matches!(
        store.reload().await,
        Err(TokenFileError::Line { line: 1, .. })
    ));
    assert_eq!(store.scopes_of("new"), Some(Scopes::of(&[Scope::Invoke])));
    // The same bad content is not reported again at every interval.
    assert_eq!(store.reload().await, Ok(Reloaded::Unchanged));

    file.write(&"#".repeat(MAX_FILE_BYTES as usize + 1));
    assert_eq!(store.reload().await, Err(TokenFileError::TooLarge));
    std::fs::remove_file(&file.0).unwrap();
    assert!(matches!(store.reload().await, Err(TokenFileError::Read(_))));
    assert_eq!(store.scopes_of("new"), Some(Scopes::of(&[Scope::Invoke])));
}

#[test]
fn a_missing_or_invalid_file_stops_the_start() {
    let file = TempFile::new("zz admin\n");
    assert!(TokenStore::load(&file.0).is_err());
    let missing = file.0.with_extension("missing");
    assert!(matches!(
        TokenStore::load(&missing),
        Err(TokenFileError::Read(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn the_watcher_picks_up_a_change_within_one_interval() {
    let file = TempFile::new(&format!("{} admin\n", sha256_hex("old")));
    let store = Arc::new(TokenStore::load(&file.0).unwrap());
    let stop = CancellationToken::new();
    let interval = Duration::from_secs(10);
    let watcher = tokio::spawn(store.clone().watch(interval, stop.clone()));

    file.write(&format!("{} admin\n", sha256_hex("rotated")));
    // Paused time: nothing is read before the interval elapses...
    tokio::time::sleep(interval - Duration::from_millis(1)).await;
    assert!(store.scopes_of("old").is_some());
    // ...and the tick that follows reads the new file (its read runs on a blocking thread, so
    // yield until it has been applied; the clock does not move while the read is in flight).
    tokio::time::sleep(Duration::from_millis(1)).await;
    while store.scopes_of("rotated").is_none() {
        tokio::task::yield_now().await;
    }
    assert_eq!(store.scopes_of("old"), None);
    stop.cancel();
    watcher.await.unwrap();
}
