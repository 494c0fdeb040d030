use super::*;

fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(|name| map.get(name).cloned())
}

#[test]
fn env_names_follow_the_canonical_and_relaxed_forms() {
    assert_eq!(
        env_names("nanofaas.rate.maxPerSecond"),
        vec!["NANOFAAS_RATE_MAX_PER_SECOND", "NANOFAAS_RATE_MAXPERSECOND"]
    );
    assert_eq!(
        env_names("sync-queue.max-depth"),
        vec![
            "NANOFAAS_SYNC_QUEUE_MAX_DEPTH",
            "NANOFAAS_SYNCQUEUE_MAXDEPTH",
            "SYNCQUEUE_MAXDEPTH",
            "SYNC_QUEUE_MAX_DEPTH"
        ]
    );
    assert_eq!(env_names("server.port"), vec!["SERVER_PORT"]);
    assert_eq!(
        env_names("management.server.port"),
        vec!["MANAGEMENT_SERVER_PORT"]
    );
    assert_eq!(
        env_names("nanofaas.k8s.callbackUrl")[0],
        "NANOFAAS_K8S_CALLBACK_URL"
    );
    assert_eq!(
        env_names("nanofaas.admin.runtime-config.enabled"),
        vec![
            "NANOFAAS_ADMIN_RUNTIME_CONFIG_ENABLED",
            "NANOFAAS_ADMIN_RUNTIMECONFIG_ENABLED"
        ]
    );
}

#[test]
fn defaults_match_the_java_control_plane_as_decided() {
    let c = config(&[]).unwrap();
    assert_eq!(c.server_port, 8080);
    assert_eq!(c.management_port, 8081);
    assert_eq!(
        c.defaults,
        FunctionDefaults {
            timeout_ms: 30_000,
            concurrency: 4,
            queue_size: 100,
            max_retries: 3
        }
    );
    assert_eq!(c.rate_max_per_second, 1000);
    assert_eq!(c.execution_store.ttl, Duration::from_secs(300));
    assert_eq!(c.execution_store.cleanup_ttl, Duration::from_secs(120));
    assert_eq!(c.execution_store.max_lifetime, Duration::from_secs(1800));
    assert_eq!(c.execution_store.max_entries, 100_000);
    assert_eq!(c.execution_store.max_bytes, 256 << 20);
    assert_eq!(c.execution_store.function_share_percent, 50);
    assert_eq!(c.http_client.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.http_client.max_response_bytes, 16 << 20);
    assert!(!c.async_queue_enabled && !c.sync_queue.enabled);
    assert_eq!(c.sync_queue.max_depth, 200);
    assert_eq!(c.pool_allowed_hosts, None);
    assert_eq!(c.deployment_default_backend, None);
    assert!(!c.autoscaler_enabled);
    assert_eq!(
        c.scaling,
        AutoscalerConfig {
            poll_interval: Duration::from_secs(5),
            default_target_in_flight_per_pod: 2,
            scale_up_cooldown: Duration::from_secs(30),
            scale_down_cooldown: Duration::from_secs(60),
        }
    );
}

#[test]
fn autoscaler_settings_are_read_from_their_variables() {
    assert_eq!(
        env_names("nanofaas.scaling.scale-up-cooldown")[0],
        "NANOFAAS_SCALING_SCALE_UP_COOLDOWN"
    );
    let c = config(&[
        ("NANOFAAS_AUTOSCALER_ENABLED", "true"),
        ("NANOFAAS_SCALING_POLL_INTERVAL_MS", "200"),
        ("NANOFAAS_SCALING_SCALE_UP_COOLDOWN", "1s"),
        ("NANOFAAS_SCALING_SCALE_DOWN_COOLDOWN", "1500"),
    ])
    .unwrap();
    assert!(c.autoscaler_enabled);
    assert_eq!(c.scaling.poll_interval, Duration::from_millis(200));
    assert_eq!(c.scaling.scale_up_cooldown, Duration::from_secs(1));
    assert_eq!(c.scaling.scale_down_cooldown, Duration::from_millis(1500));
    // Spring's relaxed form, and ISO-8601; zero turns the cooldown off.
    let c = config(&[
        ("NANOFAAS_SCALING_SCALEUPCOOLDOWN", "PT0.5S"),
        ("NANOFAAS_SCALING_SCALE_DOWN_COOLDOWN", "0"),
    ])
    .unwrap();
    assert_eq!(c.scaling.scale_up_cooldown, Duration::from_millis(500));
    assert_eq!(c.scaling.scale_down_cooldown, Duration::ZERO);
    let err = config(&[("NANOFAAS_SCALING_SCALE_DOWN_COOLDOWN", "soon")]).unwrap_err();
    assert_eq!(err.variable, "NANOFAAS_SCALING_SCALE_DOWN_COOLDOWN");
}

#[test]
fn canonical_name_wins_over_relaxed_form() {
    let c = config(&[
        ("NANOFAAS_RATE_MAXPERSECOND", "5"),
        ("NANOFAAS_RATE_MAX_PER_SECOND", "7"),
    ])
    .unwrap();
    assert_eq!(c.rate_max_per_second, 7);
    let c = config(&[("NANOFAAS_RATE_MAXPERSECOND", "5")]).unwrap();
    assert_eq!(c.rate_max_per_second, 5);
    let c = config(&[("SYNC_QUEUE_MAX_DEPTH", "9")]).unwrap();
    assert_eq!(c.sync_queue.max_depth, 9);
}

#[test]
fn invalid_values_name_the_variable_and_value() {
    let err = config(&[("NANOFAAS_DEFAULTS_TIMEOUT_MS", "soon")]).unwrap_err();
    assert_eq!(err.variable, "NANOFAAS_DEFAULTS_TIMEOUT_MS");
    assert_eq!(err.value, "soon");
    assert!(err.to_string().contains("NANOFAAS_DEFAULTS_TIMEOUT_MS"));
    let err = config(&[("NANOFAAS_ASYNC_QUEUE_ENABLED", "yes")]).unwrap_err();
    assert_eq!(err.variable, "NANOFAAS_ASYNC_QUEUE_ENABLED");
    let err = config(&[("SERVER_PORT", "70000")]).unwrap_err();
    assert_eq!(err.variable, "SERVER_PORT");
    // A negative integer is out of range, not "not an integer".
    let err = config(&[("NANOFAAS_RATE_MAX_PER_SECOND", "-1")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("expected an integer between 0 and"),
        "{err}"
    );
    let err = config(&[("NANOFAAS_DEFAULTS_CONCURRENCY", "0")]).unwrap_err();
    assert_eq!(err.variable, "NANOFAAS_DEFAULTS_CONCURRENCY");
    let err = config(&[("NANOFAAS_DEPLOYMENT_DEFAULT_BACKEND", "nomad")]).unwrap_err();
    assert_eq!(err.value, "nomad");
    let err = config(&[("NANOFAAS_POOL_ALLOWED_HOSTS", "ok.example, bad host")]).unwrap_err();
    assert_eq!(err.variable, "NANOFAAS_POOL_ALLOWED_HOSTS");
}

#[test]
fn sync_queue_enables_the_async_queue() {
    let c = config(&[("NANOFAAS_SYNC_QUEUE_ENABLED", "TRUE")]).unwrap();
    assert!(c.sync_queue.enabled && c.async_queue_enabled);
}

#[test]
fn durations_parse_like_spring() {
    let ms = Duration::from_millis(1);
    assert_eq!(parse_duration("500ms", ms), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2s", ms), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("5m", ms), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("PT2S", ms), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("pt0.5s", ms), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("1500", ms), Ok(Duration::from_millis(1500)));
    assert!(parse_duration("2 fortnights", ms).is_err());
    assert!(parse_duration("P", ms).is_err());
    let c = config(&[("NANOFAAS_EXECUTION_STORE_TTL", "10s")]).unwrap();
    assert_eq!(c.execution_store.ttl, Duration::from_secs(10));
    let c = config(&[("NANOFAAS_EXECUTION_STORE_TTL", "0")]).unwrap();
    assert_eq!(c.execution_store.ttl, Duration::from_secs(300));
    let c = config(&[("NANOFAAS_EXECUTION_STORE_TTL", "-5s")]).unwrap();
    assert_eq!(c.execution_store.ttl, Duration::from_secs(300));
    // Non-positive HTTP client settings fall back to their defaults, as in Java.
    let c = config(&[
        ("NANOFAAS_HTTP_CLIENT_CONNECT_TIMEOUT_MS", "0"),
        ("NANOFAAS_HTTP_CLIENT_READ_TIMEOUT_MS", "-1"),
        ("NANOFAAS_HTTP_CLIENT_MAX_IN_MEMORY_SIZE_MB", "-1"),
    ])
    .unwrap();
    assert_eq!(c.http_client.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.http_client.read_timeout, Duration::from_secs(30));
    assert_eq!(c.http_client.max_response_bytes, 16 << 20);
    let c = config(&[("NANOFAAS_HTTP_CLIENT_CONNECT_TIMEOUT_MS", "250")]).unwrap();
    assert_eq!(c.http_client.connect_timeout, Duration::from_millis(250));
}

#[test]
fn iso_durations_round_trip_like_java() {
    for (text, d) in [
        ("PT2S", Duration::from_secs(2)),
        ("PT0.5S", Duration::from_millis(500)),
        ("PT1M30S", Duration::from_secs(90)),
        ("PT1H", Duration::from_secs(3600)),
        ("PT0S", Duration::ZERO),
    ] {
        assert_eq!(parse_iso_duration(text), Some(d), "{text}");
        assert_eq!(format_iso_duration(d), text);
    }
    assert_eq!(
        parse_iso_duration("P1DT1S"),
        Some(Duration::from_secs(86_401))
    );
    assert_eq!(parse_iso_duration("5s"), None);
    assert_eq!(parse_iso_duration("PT"), None);
    assert_eq!(parse_iso_duration("PT5X"), None);
}

/// Found by fuzzing (fuzz/corpus/duration, fuzz/corpus/config): durations no `Instant` can hold
/// were accepted, then panicked where a deadline was computed (janitor start, shutdown).
#[test]
fn durations_beyond_292_years_are_refused() {
    let ms = Duration::from_millis(1);
    let max = Duration::from_nanos(i64::MAX as u64);
    assert_eq!(
        parse_duration("106751d", ms),
        Ok(Duration::from_secs(106_751 * 86_400))
    );
    assert!(parse_duration("106752d", ms).is_err());
    assert!(parse_duration("18446744073709551615s", ms).is_err());
    assert!(parse_duration("PT18446744073709551615S", ms).is_err());
    assert_eq!(parse_iso_duration("PT9223372036.854775807S"), Some(max));
    assert_eq!(parse_iso_duration("PT9223372036.854775808S"), None);
    // Past u128 nanoseconds: refused, not wrapped (or a panic with overflow checks).
    assert_eq!(parse_iso_duration("P9999999999999999999999999D"), None);
    assert_eq!(
        parse_iso_duration("PT99999999999999999999999999999999H"),
        None
    );
    let e = config(&[("NANOFAAS_SHUTDOWN_GRACE_PERIOD", "PT18446744073709551615S")]).unwrap_err();
    assert_eq!(e.variable, "NANOFAAS_SHUTDOWN_GRACE_PERIOD");
    assert!(e.reason.contains("too large"), "{e:?}");
    // A negative one still means "the default" where it did.
    let c = config(&[("NANOFAAS_EXECUTION_STORE_TTL", "-5s")]).unwrap();
    assert_eq!(c.execution_store.ttl, Duration::from_secs(300));
}

#[test]
fn allowed_hosts_match_names_and_networks() {
    let c = config(&[(
        "NANOFAAS_POOL_ALLOWED_HOSTS",
        "runtime.internal, 10.0.0.0/8,127.0.0.1",
    )])
    .unwrap();
    let rules = c.pool_allowed_hosts.unwrap();
    let allowed = |h: &str| rules.iter().any(|r| r.matches(h));
    assert!(allowed("RUNTIME.internal"));
    assert!(allowed("10.2.3.4"));
    assert!(allowed("127.0.0.1"));
    assert!(!allowed("127.0.0.2"));
    assert!(!allowed("evil.example"));
}

#[test]
fn kubernetes_namespace_and_callback_url_fall_back_in_order() {
    let c = config(&[]).unwrap();
    assert_eq!(c.k8s.effective_namespace(), "default");
    assert_eq!(
        c.k8s.effective_callback_url(),
        "http://control-plane.default.svc.cluster.local:8080/v1/internal/executions"
    );
    assert_eq!(c.k8s.image_pull_policy, "Always");
    let c = config(&[("POD_NAMESPACE", " nanofaas ")]).unwrap();
    assert_eq!(c.k8s.effective_namespace(), "nanofaas");
    assert_eq!(
        c.k8s.effective_callback_url(),
        "http://control-plane.nanofaas.svc.cluster.local:8080/v1/internal/executions"
    );
    let c = config(&[
        ("POD_NAMESPACE", "nanofaas"),
        ("NANOFAAS_K8S_NAMESPACE", "functions"),
        (
            "NANOFAAS_K8S_CALLBACK_URL",
            "http://cp.example:8080/v1/internal/executions",
        ),
        ("NANOFAAS_K8S_IMAGE_PULL_POLICY", "IfNotPresent"),
    ])
    .unwrap();
    assert_eq!(c.k8s.effective_namespace(), "functions");
    assert_eq!(
        c.k8s.effective_callback_url(),
        "http://cp.example:8080/v1/internal/executions"
    );
    assert_eq!(c.k8s.image_pull_policy, "IfNotPresent");
}

#[test]
fn bind_addresses_and_listener_limits() {
    let c = config(&[]).unwrap();
    assert_eq!(
        (c.server_address.as_str(), c.management_address.as_str()),
        ("0.0.0.0", "0.0.0.0")
    );
    assert_eq!(c.listener.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.listener.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.listener.api_max_connections, None);
    let c = config(&[
        ("SERVER_ADDRESS", "127.0.0.1"),
        ("MANAGEMENT_SERVER_ADDRESS", "[::1]"),
        ("NANOFAAS_HTTP_MAXCONNECTIONS", "32"),
        ("NANOFAAS_HTTP_HEADER_READ_TIMEOUT", "250ms"),
    ])
    .unwrap();
    assert_eq!(c.server_address, "127.0.0.1");
    assert_eq!(c.management_address, "::1");
    assert_eq!(c.listener.api_max_connections, Some(32));
    assert_eq!(c.listener.header_read_timeout, Duration::from_millis(250));
    let err = config(&[("SERVER_ADDRESS", "not an/address")]).unwrap_err();
    assert_eq!(err.variable, "SERVER_ADDRESS");
}

#[test]
fn ssrf_allowed_cidrs_take_networks_and_addresses_not_names() {
    assert!(config(&[]).unwrap().ssrf_allowed_cidrs.is_empty());
    let c = config(&[(
        "NANOFAAS_SSRF_ALLOWED_CIDRS",
        " 169.254.0.0/16, fd00:ec2::254 ,",
    )])
    .unwrap();
    assert_eq!(
        c.ssrf_allowed_cidrs,
        vec![
            "169.254.0.0/16".parse::<IpNet>().unwrap(),
            "fd00:ec2::254/128".parse::<IpNet>().unwrap()
        ]
    );
    let e = config(&[("NANOFAAS_SSRF_ALLOWED_CIDRS", "metadata.internal")]).unwrap_err();
    assert_eq!(e.variable, "NANOFAAS_SSRF_ALLOWED_CIDRS");
}

#[test]
fn auth_is_off_by_default_and_needs_a_token_file_when_on() {
    let auth = config(&[]).unwrap().auth;
    assert!(!auth.any());
    assert_eq!(auth.reload_interval, Duration::from_secs(10));
    for switch in [
        "NANOFAAS_AUTH_ENABLED",
        "NANOFAAS_AUTH_METRICS_PROTECTED",
        "NANOFAAS_AUTH_CALLBACKS_PROTECTED",
    ] {
        let e = config(&[(switch, "true")]).unwrap_err();
        assert_eq!(e.variable, "NANOFAAS_AUTH_TOKENS_FILE", "{switch}");
    }
    let auth = config(&[
        ("NANOFAAS_AUTH_ENABLED", "true"),
        ("NANOFAAS_AUTH_TOKENS_FILE", " /etc/nanofaas/tokens "),
        ("NANOFAAS_AUTH_RELOAD_INTERVAL", "2s"),
    ])
    .unwrap()
    .auth;
    assert!(auth.enabled && !auth.metrics_protected && !auth.callbacks_protected);
    assert_eq!(
        auth.tokens_file.as_deref(),
        Some(std::path::Path::new("/etc/nanofaas/tokens"))
    );
    assert_eq!(auth.reload_interval, Duration::from_secs(2));
}

#[test]
fn state_backend_and_nats_settings() {
    use super::StateBackendKind;
    let c = config(&[]).unwrap();
    assert_eq!(c.state.backend, StateBackendKind::Memory);
    assert_eq!(c.state.nats.urls, vec!["nats://127.0.0.1:4222".to_owned()]);
    assert_eq!(c.state.nats.prefix, "nanofaas");
    assert_eq!(c.state.nats.connect_timeout, Duration::from_secs(30));
    assert_eq!(c.state.nats.replicas, 1);
    assert_eq!(c.state.nats.lease_ttl, Duration::from_secs(10));
    assert_eq!(c.state.replica_id, None);
    let c = config(&[
        ("NANOFAAS_STATE_BACKEND", "nats"),
        ("NANOFAAS_NATS_URL", "nats://a:4222, tls://b:4223,c:4222"),
        ("NANOFAAS_NATS_PREFIX", "team_a-1"),
        ("NANOFAAS_NATS_USER", "u"),
        ("NANOFAAS_NATS_PASSWORD", "secret"),
        ("NANOFAAS_NATS_TLS_REQUIRED", "true"),
        ("NANOFAAS_NATS_CONNECT_TIMEOUT", "5s"),
        ("NANOFAAS_NATS_REPLICAS", "3"),
        ("NANOFAAS_REPLICA_ID", "control-plane-0"),
    ])
    .unwrap();
    assert_eq!(c.state.backend, StateBackendKind::Nats);
    assert_eq!(
        c.state.nats.urls,
        ["nats://a:4222", "tls://b:4223", "c:4222"]
    );
    assert_eq!(c.state.nats.prefix, "team_a-1");
    assert!(c.state.nats.tls_required);
    assert_eq!(c.state.nats.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.state.nats.replicas, 3);
    assert_eq!(c.state.replica_id.as_deref(), Some("control-plane-0"));
    // The password never shows in Debug output.
    assert!(!format!("{c:?}").contains("secret"));

    for (var, value) in [
        ("NANOFAAS_STATE_BACKEND", "redis"),
        ("NANOFAAS_NATS_URL", "http://a:4222"),
        ("NANOFAAS_NATS_PREFIX", "a.b"),
        ("NANOFAAS_NATS_REPLICAS", "7"),
        ("NANOFAAS_REPLICA_ID", "a b"),
        ("NANOFAAS_NATS_TLS_REQUIRED", "yes"),
        ("NANOFAAS_NATS_LEASE_TTL", "500ms"),
    ] {
        let err = config(&[(var, value)]).unwrap_err();
        assert_eq!(err.variable, var, "{value}");
    }
    let err = config(&[("NANOFAAS_NATS_USER", "u")]).unwrap_err();
    assert_eq!(err.variable, "NANOFAAS_NATS_USER");
    assert!(err.reason.contains("NANOFAAS_NATS_PASSWORD"), "{err}");
}

#[test]
fn retry_backoff_is_off_by_default_and_validated_when_set() {
    let off = config(&[]).unwrap().retry;
    assert_eq!(off, RetryConfig::default());
    assert!(!off.backoff_enabled());
    let on = config(&[
        ("NANOFAAS_RETRY_BACKOFF_INITIAL", "200ms"),
        ("NANOFAAS_RETRY_BACKOFF_MAX", "PT10S"),
    ])
    .unwrap()
    .retry;
    assert_eq!(
        (on.backoff_initial, on.backoff_max),
        (Duration::from_millis(200), Duration::from_secs(10))
    );
    // A bare number is milliseconds; the maximum defaults to 30 s.
    let bare = config(&[("NANOFAAS_RETRY_BACKOFF_INITIAL", "500")])
        .unwrap()
        .retry;
    assert_eq!(
        (bare.backoff_initial, bare.backoff_max),
        (Duration::from_millis(500), DEFAULT_BACKOFF_MAX)
    );
    // An initial delay above 30 s raises the default maximum with it.
    let long = config(&[("NANOFAAS_RETRY_BACKOFF_INITIAL", "1m")])
        .unwrap()
        .retry;
    assert_eq!(long.backoff_max, Duration::from_secs(60));
    assert_eq!(
        config(&[("NANOFAAS_RETRY_BACKOFF_INITIAL", "0")])
            .unwrap()
            .retry,
        RetryConfig::default()
    );
    for (pairs, variable) in [
        (
            vec![("NANOFAAS_RETRY_BACKOFF_INITIAL", "soon")],
            "NANOFAAS_RETRY_BACKOFF_INITIAL",
        ),
        (
            vec![
                ("NANOFAAS_RETRY_BACKOFF_INITIAL", "2s"),
                ("NANOFAAS_RETRY_BACKOFF_MAX", "1s"),
            ],
            "NANOFAAS_RETRY_BACKOFF_MAX",
        ),
        (
            vec![("NANOFAAS_RETRY_BACKOFF_MAX", "1s")],
            "NANOFAAS_RETRY_BACKOFF_MAX",
        ),
        (
            vec![("NANOFAAS_RETRY_BACKOFF_INITIAL", "2h")],
            "NANOFAAS_RETRY_BACKOFF_INITIAL",
        ),
        (
            vec![
                ("NANOFAAS_RETRY_BACKOFF_INITIAL", "1s"),
                ("NANOFAAS_RETRY_BACKOFF_MAX", "2h"),
            ],
            "NANOFAAS_RETRY_BACKOFF_MAX",
        ),
    ] {
        let e = config(&pairs).unwrap_err();
        assert_eq!(e.variable, variable, "{pairs:?}");
        assert!(e.to_string().contains(variable), "{e}");
    }
    let e = config(&[
        ("NANOFAAS_RETRY_BACKOFF_INITIAL", "2s"),
        ("NANOFAAS_RETRY_BACKOFF_MAX", "1s"),
    ])
    .unwrap_err();
    assert!(e.reason.contains("NANOFAAS_RETRY_BACKOFF_INITIAL"), "{e}");
}

#[test]
fn webhook_settings_have_defaults_and_keep_the_secret_out_of_messages() {
    let w = config(&[]).unwrap().webhook;
    assert_eq!(w, WebhookConfig::default());
    assert_eq!(w.signing_key, None);
    assert_eq!(
        (w.max_attempts, w.timeout, w.backoff_initial, w.backoff_max),
        (
            8,
            Duration::from_secs(10),
            Duration::from_secs(1),
            Duration::from_secs(60)
        )
    );
    let c = config(&[
        ("NANOFAAS_WEBHOOK_SECRET", "whsec_c2VjcmV0LWtleQ"),
        ("NANOFAAS_WEBHOOK_MAX_ATTEMPTS", "3"),
        ("NANOFAAS_WEBHOOK_TIMEOUT", "2s"),
        ("NANOFAAS_WEBHOOK_BACKOFF_INITIAL", "100"),
        ("NANOFAAS_WEBHOOK_BACKOFF_MAX", "PT5S"),
        ("NANOFAAS_WEBHOOK_QUEUE_SIZE", "50"),
        ("NANOFAAS_WEBHOOK_CONCURRENCY", "4"),
        (
            "NANOFAAS_WEBHOOK_ALLOWED_HOSTS",
            "hooks.example, 10.0.0.0/8",
        ),
    ])
    .unwrap()
    .webhook;
    // `whsec_` secrets are base64 (padding optional); the key is what they decode to.
    assert_eq!(c.signing_key.as_ref().unwrap().key(), b"secret-key");
    assert_eq!(format!("{:?}", c.signing_key), "Some(<set>)");
    assert_eq!(c.max_attempts, 3);
    assert_eq!(c.timeout, Duration::from_secs(2));
    assert_eq!(c.backoff_initial, Duration::from_millis(100));
    assert_eq!(c.backoff_max, Duration::from_secs(5));
    assert_eq!((c.queue_size, c.concurrency), (50, 4));
    assert_eq!(c.allowed_hosts.unwrap().len(), 2);
    let plain = config(&[("NANOFAAS_WEBHOOK_SECRET", " s3cret ")]).unwrap();
    assert_eq!(plain.webhook.signing_key.unwrap().key(), b"s3cret");
    let e = config(&[("NANOFAAS_WEBHOOK_SECRET", "whsec_not base64!")]).unwrap_err();
    assert_eq!(e.variable, "NANOFAAS_WEBHOOK_SECRET");
    assert!(!e.to_string().contains("not base64"), "{e}");
    let e = config(&[
        ("NANOFAAS_WEBHOOK_BACKOFF_INITIAL", "10s"),
        ("NANOFAAS_WEBHOOK_BACKOFF_MAX", "1s"),
    ])
    .unwrap_err();
    assert_eq!(e.variable, "NANOFAAS_WEBHOOK_BACKOFF_MAX");
    for (k, v) in [
        ("NANOFAAS_WEBHOOK_MAX_ATTEMPTS", "0"),
        ("NANOFAAS_WEBHOOK_QUEUE_SIZE", "0"),
        ("NANOFAAS_WEBHOOK_ALLOWED_HOSTS", "not/a host"),
    ] {
        assert_eq!(config(&[(k, v)]).unwrap_err().variable, k);
    }
}
