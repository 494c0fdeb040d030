//! Manifest tests are pure; provider tests run against a scripted mock API server (the
//! kube-rs testing pattern: a `Client` over a `tower_test::mock::pair`) that asserts each
//! request's method, path, query, content type and body, and fails on any request it did
//! not expect or any expected request that never came.

use axum::http::Method;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::mock_api::*;
use super::names::nano_suffix;
use super::*;
use crate::api::error::ApiError;
use crate::config::Config;
use crate::config::KubernetesConfig;
use crate::deploy::{DeployError, DeploymentProvider};
use crate::function::FunctionSpecRequest;
use crate::function::{FunctionSpec, Scaling, ScalingMetric};
use crate::support::lock;

fn spec(json: &str) -> FunctionSpec {
    let request: FunctionSpecRequest = serde_json::from_str(json).unwrap();
    request.resolve(&Config::default().defaults).unwrap()
}

fn echo() -> FunctionSpec {
    spec(r#"{"name":"echo","image":"ghcr.io/acme/echo:1"}"#)
}

fn hpa_spec() -> FunctionSpec {
    spec(
        r#"{"name":"echo","image":"ghcr.io/acme/echo:1","scalingConfig":{"strategy":"HPA",
            "minReplicas":2,"maxReplicas":5,"metrics":[{"type":"cpu","target":"70"},
            {"type":"rps","target":"x"},{"type":"bogus","target":"1"}]}}"#,
    )
}

fn manifests() -> Manifests {
    Manifests::from_config(&k8s_config())
}

// ---- pure parts --------------------------------------------------------------------

#[test]
fn resource_names_and_labels_are_valid_kubernetes_names() {
    // 63 characters, the longest valid function name.
    let long = format!("a{}", "b".repeat(62));
    // Cut at 60 characters it would end in `-`.
    let cut_at_dash = format!("a{}-Cc", "b".repeat(58));
    let ends_in_dot = format!("a{}.", "b".repeat(61));
    let cases: [(&str, String, String); 8] = [
        ("echo", "fn-echo".into(), "echo".into()),
        ("My_Func.v2", "fn-my-func-v2".into(), "My_Func.v2".into()),
        ("a-", "fn-a".into(), "a".into()),
        ("a_.", "fn-a".into(), "a".into()),
        ("x--y", "fn-x--y".into(), "x--y".into()),
        (&long, format!("fn-{}", &long[..60]), long.clone()),
        (
            &cut_at_dash,
            format!("fn-a{}", "b".repeat(58)),
            cut_at_dash.clone(),
        ),
        (
            &ends_in_dot,
            format!("fn-a{}", "b".repeat(59)),
            format!("a{}", "b".repeat(61)),
        ),
    ];
    for (function, name, label) in cases {
        let got = resource_name(function);
        assert_eq!(got, name, "{function}");
        assert!(got.len() <= 63, "{got}");
        assert!(
            got.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !got.ends_with('-'),
            "{got}"
        );
        let got = label_value(function);
        assert_eq!(got, label, "{function}");
        assert!(got.len() <= 63, "{got}");
    }
}

#[test]
fn validation_pod_names_are_normalised_and_short() {
    assert_eq!(
        validation_pod_name("My__Func.v2", "abc123"),
        "imgval-my-func-v2-abc123"
    );
    let long = validation_pod_name(&format!("f{}", "x".repeat(62)), "lmnopqrstuvw");
    assert!(
        long.len() <= 63 && long.ends_with("-lmnopqrstuvw"),
        "{long}"
    );
    let suffix = nano_suffix();
    assert!(suffix.bytes().all(|b| b.is_ascii_alphanumeric()) && suffix.len() >= 10);
}

#[test]
fn deployment_manifest_is_the_reference_shape() {
    let spec = spec(
        r#"{"name":"Echo_v2","image":"ghcr.io/acme/echo:1","command":["/bin/echo","hi"],
            "env":{"WARM":"false","CALLBACK_URL":"http://evil","B":"2","A":"1"},
            "resources":{"cpu":"250m","memory":"64Mi"},"timeoutMs":1500,
            "runtimeMode":"STDIO","runtimeCommand":"python app.py",
            "scalingConfig":{"strategy":"NONE","minReplicas":0,"maxReplicas":3},
            "imagePullSecrets":[" regcred ",""," ","other"]}"#,
    );
    let labels = json!({"app": "nanofaas", "function": "Echo_v2"});
    let expected = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "fn-echo-v2", "namespace": NS, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"function": "Echo_v2"}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/path": "/metrics",
                        "prometheus.io/port": "8080"
                    }
                },
                "spec": {
                    "containers": [{
                        "name": "function",
                        "image": "ghcr.io/acme/echo:1",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/bin/echo", "hi"],
                        "env": [
                            {"name": "FUNCTION_NAME", "value": "Echo_v2"},
                            {"name": "WARM", "value": "true"},
                            {"name": "TIMEOUT_MS", "value": "1500"},
                            {"name": "EXECUTION_MODE", "value": "STDIO"},
                            {"name": "WATCHDOG_CMD", "value": "python app.py"},
                            {"name": "CALLBACK_URL", "value":
                                "http://control-plane.nanofaas.svc.cluster.local:8080/v1/internal/executions"},
                            {"name": "A", "value": "1"},
                            {"name": "B", "value": "2"}
                        ],
                        "resources": {
                            "limits": {"cpu": "250m", "memory": "64Mi"},
                            "requests": {"cpu": "250m", "memory": "64Mi"}
                        },
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "readinessProbe": {
                            "httpGet": {"path": "/health", "port": 8080},
                            "initialDelaySeconds": 2,
                            "periodSeconds": 5
                        }
                    }],
                    "imagePullSecrets": [{"name": "regcred"}, {"name": "other"}],
                    "restartPolicy": "Always"
                }
            }
        }
    });
    let got = serde_json::to_value(manifests().deployment(&spec)).unwrap();
    assert_eq!(got, expected, "{got:#}");
    assert_eq!(
        manifests().endpoint_url(&spec.name),
        "http://fn-echo-v2.nanofaas.svc.cluster.local:8080/invoke"
    );
}

#[test]
fn deployment_defaults_and_configured_values() {
    // No scaling config (only possible for a spec built by hand): 1 replica. No command,
    // resources or pull secrets: the fields are absent.
    let mut plain = echo();
    plain.scaling = Scaling::AsGiven(None);
    let config = KubernetesConfig {
        callback_service_port: 8080,
        namespace: None,
        pod_namespace: Some("team-a".to_owned()),
        callback_url: String::new(),
        image_pull_policy: "Always".to_owned(),
    };
    let d = serde_json::to_value(Manifests::from_config(&config).deployment(&plain)).unwrap();
    assert_eq!(d["metadata"]["namespace"], "team-a");
    assert_eq!(d["spec"]["replicas"], 1);
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(container.get("command"), None);
    assert_eq!(container.get("resources"), None);
    assert_eq!(d["spec"]["template"]["spec"].get("imagePullSecrets"), None);
    assert_eq!(
        container["env"][4],
        json!({"name": "CALLBACK_URL", "value":
            "http://control-plane.team-a.svc.cluster.local:8080/v1/internal/executions"})
    );
    // Resolved DEPLOYMENT defaults (minReplicas 1); an explicit callback URL wins; only cpu.
    let config = KubernetesConfig {
        callback_service_port: 8080,
        callback_url: "http://cp.example:8080/v1/internal/executions".to_owned(),
        ..k8s_config()
    };
    let only_cpu = spec(r#"{"name":"echo","image":"i","resources":{"cpu":"1"}}"#);
    let d = serde_json::to_value(Manifests::from_config(&config).deployment(&only_cpu)).unwrap();
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(
        container["resources"],
        json!({"limits": {"cpu": "1"}, "requests": {"cpu": "1"}})
    );
    assert_eq!(
        container["env"][4]["value"],
        "http://cp.example:8080/v1/internal/executions"
    );
}

#[test]
fn service_manifest_is_the_reference_shape() {
    let got = serde_json::to_value(manifests().service(&echo())).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "fn-echo",
                "namespace": NS,
                "labels": {"app": "nanofaas", "function": "echo"},
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/path": "/metrics",
                    "prometheus.io/port": "8080"
                }
            },
            "spec": {
                "type": "ClusterIP",
                "selector": {"function": "echo"},
                "ports": [{"port": 8080, "targetPort": 8080, "protocol": "TCP"}]
            }
        })
    );
}

fn expected_hpa() -> Value {
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "fn-echo",
            "namespace": NS,
            "labels": {"app": "nanofaas", "function": "echo"}
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fn-echo"},
            "minReplicas": 2,
            "maxReplicas": 5,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 70}}},
                {"type": "External", "external": {
                    "metric": {"name": "nanofaas_rps",
                        "selector": {"matchLabels": {"function": "echo"}}},
                    "target": {"type": "Value", "value": "50"}}}
            ]
        }
    })
}

#[test]
fn hpa_only_for_the_hpa_strategy() {
    let got = serde_json::to_value(manifests().hpa(&hpa_spec()).unwrap()).unwrap();
    assert_eq!(got, expected_hpa(), "{got:#}");
    for strategy in ["INTERNAL", "NONE"] {
        let s = spec(&format!(
            r#"{{"name":"echo","image":"i","scalingConfig":{{"strategy":"{strategy}"}}}}"#
        ));
        assert!(manifests().hpa(&s).is_none(), "{strategy}");
    }
    // minReplicas 0 is kept for the Deployment but the HPA needs at least 1.
    let zero =
        spec(r#"{"name":"echo","image":"i","scalingConfig":{"strategy":"HPA","minReplicas":0}}"#);
    let hpa = manifests().hpa(&zero).unwrap();
    assert_eq!(hpa.spec.min_replicas, Some(1));
    assert_eq!(hpa.spec.max_replicas, 10);
    assert_eq!(manifests().deployment(&zero).spec.replicas, Some(0));
}

#[test]
fn metrics_translate_as_the_reference_says() {
    let external = |name: &str, value: &str| {
        json!({"type": "External", "external": {
            "metric": {"name": name, "selector": {"matchLabels": {"function": "fx"}}},
            "target": {"type": "Value", "value": value}}})
    };
    let resource = |name: &str, value: i32| {
        json!({"type": "Resource", "resource": {"name": name,
            "target": {"type": "Utilization", "averageUtilization": value}}})
    };
    let cases: Vec<(Option<&str>, Option<&str>, Option<Value>)> = vec![
        (Some("cpu"), Some("80"), Some(resource("cpu", 80))),
        (Some("memory"), Some(" 65 "), Some(resource("memory", 65))),
        (Some("cpu"), Some("7.5"), Some(resource("cpu", 50))),
        (
            Some("queue_depth"),
            Some("5"),
            Some(external("nanofaas_queue_depth", "5")),
        ),
        (
            Some("in_flight"),
            None,
            Some(external("nanofaas_in_flight", "50")),
        ),
        (
            Some("rps"),
            Some("100"),
            Some(external("nanofaas_rps", "100")),
        ),
        (
            Some("prometheus"),
            Some("3"),
            Some(external("nanofaas_custom_fx", "3")),
        ),
        (Some("gpu"), Some("1"), None),
        (None, Some("1"), None),
    ];
    for (kind, target, expected) in cases {
        let metric = ScalingMetric {
            kind: kind.map(str::to_owned),
            target: target.map(str::to_owned),
            query: None,
        };
        let got = metric_spec("fx", &metric).map(|m| serde_json::to_value(m).unwrap());
        assert_eq!(got, expected, "{kind:?} {target:?}");
    }
}

fn pod_status(status: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": status
    }))
    .unwrap()
}

fn waiting(reason: &str, message: &str) -> Value {
    json!({"phase": "Pending", "containerStatuses": [{
        "name": "validate", "image": "img", "imageID": "", "ready": false,
        "restartCount": 0,
        "state": {"waiting": {"reason": reason, "message": message}}}]})
}

#[test]
fn pull_outcomes_follow_the_reference() {
    let not_found = || {
        Some(Err(DeployError::ImageNotFound(
            "Image not found in registry: img".into(),
        )))
    };
    let auth = || {
        Some(Err(DeployError::ImagePullAuthRequired(
            "Image pull authentication failed for: img".into(),
        )))
    };
    let cases: Vec<(Value, Option<Result<(), DeployError>>)> = vec![
        (json!({}), None),
        (json!({"phase": "Pending"}), None),
        (waiting("ContainerCreating", ""), None),
        (json!({"phase": "Running"}), Some(Ok(()))),
        (json!({"phase": "Succeeded"}), Some(Ok(()))),
        (
            json!({"phase": "Pending", "containerStatuses": [{"name": "validate",
                "image": "img", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1}}}]}),
            Some(Ok(())),
        ),
        (
            waiting(
                "ErrImagePull",
                "failed to resolve reference \"img\": img: not found",
            ),
            not_found(),
        ),
        (
            waiting("ErrImagePull", "manifest unknown: manifest unknown"),
            not_found(),
        ),
        (
            waiting("ImagePullBackOff", "NAME UNKNOWN: repository"),
            not_found(),
        ),
        (
            waiting("InvalidImageName", "couldn't parse image reference"),
            not_found(),
        ),
        (
            waiting(
                "ErrImagePull",
                "pull access denied, repository does not exist",
            ),
            auth(),
        ),
        (waiting("ErrImagePull", "401 Unauthorized"), auth()),
        (
            waiting("ImagePullBackOff", "Back-off pulling image \"img\""),
            Some(Err(DeployError::ImageRegistryUnavailable(
                "Unable to validate image in registry: img (ImagePullBackOff: Back-off \
                 pulling image \"img\")"
                    .into(),
            ))),
        ),
    ];
    for (status, expected) in cases {
        assert_eq!(
            pull_outcome(&pod_status(status.clone()), "img"),
            expected,
            "{status}"
        );
    }
    let no_status: Pod =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}})).unwrap();
    assert_eq!(pull_outcome(&no_status, "img"), None);
}

// ---- provider against the mock API -------------------------------------------------

#[tokio::test]
async fn register_applies_deployment_and_service_and_drops_a_stale_hpa() {
    let spec = echo();
    let expected_deployment = serde_json::to_value(manifests().deployment(&spec)).unwrap();
    let expected_service = serde_json::to_value(manifests().service(&spec)).unwrap();
    let (p, server) = provider(vec![
        apply(deployment_path("fn-echo")).body(move |b| assert_eq!(b, &expected_deployment)),
        apply(service_path("fn-echo")).body(move |b| assert_eq!(b, &expected_service)),
        delete(hpa_path("fn-echo"), 404),
    ]);
    let provisioned = p.provision(&spec).await;
    finish(p, server).await;
    let provisioned = provisioned.unwrap();
    assert_eq!(
        provisioned.endpoint_url,
        "http://fn-echo.nanofaas.svc.cluster.local:8080/invoke"
    );
    assert!(provisioned.replicas.is_none());
}

#[tokio::test]
async fn register_with_hpa_strategy_applies_the_hpa() {
    let (p, server) = provider(vec![
        apply(deployment_path("fn-echo")).body(|b| assert_eq!(b["spec"]["replicas"], 2, "{b}")),
        apply(service_path("fn-echo")),
        apply(hpa_path("fn-echo")).body(|b| assert_eq!(b, &expected_hpa())),
    ]);
    let provisioned = p.provision(&hpa_spec()).await;
    finish(p, server).await;
    provisioned.unwrap();
}

#[tokio::test]
async fn re_register_applies_the_same_objects_again() {
    let (deployments, record_deployment) = recorder();
    let (services, record_service) = recorder();
    let once = || {
        vec![
            apply(deployment_path("fn-echo")).body(record_deployment.clone()),
            apply(service_path("fn-echo")).body(record_service.clone()),
            delete(hpa_path("fn-echo"), 404),
        ]
    };
    let (p, server) = provider([once(), once()].joined());
    let first = p.provision(&echo()).await.map(|p| p.endpoint_url);
    let second = p.provision(&echo()).await.map(|p| p.endpoint_url);
    finish(p, server).await;
    assert_eq!(first.unwrap(), second.unwrap());
    let deployments = lock(&deployments);
    let services = lock(&services);
    assert_eq!(deployments.len(), 2);
    assert_eq!(deployments[0], deployments[1]);
    assert_eq!(services[0], services[1]);
}

#[tokio::test]
async fn re_register_without_hpa_strategy_deletes_the_stale_hpa() {
    let (p, server) = provider(vec![
        apply(deployment_path("fn-echo")),
        apply(service_path("fn-echo")),
        apply(hpa_path("fn-echo")),
        apply(deployment_path("fn-echo")),
        apply(service_path("fn-echo")),
        delete(hpa_path("fn-echo"), 200),
    ]);
    let with_hpa = p.provision(&hpa_spec()).await;
    let without = p.provision(&echo()).await;
    finish(p, server).await;
    with_hpa.unwrap();
    without.unwrap();
}

#[tokio::test]
async fn scale_patches_the_scale_subresource() {
    let mut scale = expect(
        Method::PATCH,
        format!("{}/scale", deployment_path("fn-echo")),
    )
    .body(|b| assert_eq!(b, &json!({"spec": {"replicas": 3}})))
    .reply(Reply::Json(
        200,
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "fn-echo", "namespace": NS},
                "spec": {"replicas": 3}, "status": {"replicas": 1}}),
    ));
    scale.content_type = Some(MERGE_TYPE);
    scale.query = Some("fieldManager=nanofaas-control-plane");
    let (p, server) = provider(vec![scale]);
    let result = p.set_replicas("echo", 3).await;
    finish(p, server).await;
    result.unwrap();
}

#[tokio::test]
async fn ready_replicas_come_from_the_deployment_status() {
    let object = serde_json::to_value(manifests().deployment(&echo())).unwrap();
    let with_status = |status: Value| {
        let mut d = object.clone();
        d["status"] = status;
        Reply::Json(200, d)
    };
    let cases = [
        (with_status(json!({"replicas": 3, "readyReplicas": 2})), 2),
        (with_status(json!({"replicas": 1})), 0),
        (Reply::Json(200, object.clone()), 0),
        (status(404), 0),
    ];
    for (reply, expected) in cases {
        let get = expect(Method::GET, deployment_path("fn-echo"))
            .body(|b| assert_eq!(b, &Value::Null))
            .reply(reply);
        let (p, server) = provider(vec![get]);
        let ready = p.ready_replicas("echo").await;
        finish(p, server).await;
        assert_eq!(ready.unwrap(), expected);
    }
}

#[tokio::test]
async fn delete_removes_hpa_service_and_deployment_and_tolerates_404() {
    let (p, server) = provider(vec![
        delete(hpa_path("fn-echo"), 404),
        delete(service_path("fn-echo"), 200),
        delete(deployment_path("fn-echo"), 200),
        // Deleting again: everything is already gone.
        delete(hpa_path("fn-echo"), 404),
        delete(service_path("fn-echo"), 404),
        delete(deployment_path("fn-echo"), 404),
    ]);
    let first = p.deprovision("echo").await;
    let second = p.deprovision("echo").await;
    finish(p, server).await;
    first.unwrap();
    second.unwrap();
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Provision,
    Scale,
    Ready,
    Deprovision,
}

async fn run(op: Op, p: &KubernetesProvider) -> Result<(), DeployError> {
    match op {
        Op::Provision => p.provision(&echo()).await.map(drop),
        Op::Scale => p.set_replicas("echo", 2).await,
        Op::Ready => p.ready_replicas("echo").await.map(drop),
        Op::Deprovision => p.deprovision("echo").await,
    }
}

#[tokio::test]
async fn api_failures_are_failed_and_transport_errors_unavailable() {
    let refused = Reply::Transport("connection refused");
    let rollback = |code| {
        vec![
            delete(hpa_path("fn-echo"), code),
            delete(service_path("fn-echo"), code),
            delete(deployment_path("fn-echo"), code),
        ]
    };
    let cases: Vec<(Op, Vec<Exchange>, u16, &str)> = vec![
        (
            Op::Provision,
            vec![apply(deployment_path("fn-echo")).reply(status(500))],
            502,
            "Kubernetes API refused to apply Deployment fn-echo: the API says no (500) (HTTP 500)",
        ),
        (
            Op::Provision,
            vec![apply(deployment_path("fn-echo")).reply(Reply::Transport("connection refused"))],
            503,
            "Kubernetes API unavailable: ",
        ),
        (
            Op::Provision,
            [
                vec![
                    apply(deployment_path("fn-echo")),
                    apply(service_path("fn-echo")).reply(status(422)),
                ],
                rollback(200),
            ]
            .joined(),
            502,
            "refused to apply Service fn-echo: the API says no (422)",
        ),
        (
            // The API goes away after the Deployment was written: it is still cleaned up
            // (best effort; here the deletes get through).
            Op::Provision,
            [
                vec![
                    apply(deployment_path("fn-echo")),
                    apply(service_path("fn-echo")).reply(Reply::Transport("broken pipe")),
                ],
                rollback(404),
            ]
            .joined(),
            503,
            "Kubernetes API unavailable: ",
        ),
        (
            Op::Provision,
            [
                vec![
                    apply(deployment_path("fn-echo")),
                    apply(service_path("fn-echo")),
                    delete(hpa_path("fn-echo"), 403),
                ],
                rollback(200),
            ]
            .joined(),
            502,
            "refused to delete HorizontalPodAutoscaler fn-echo: the API says no (403)",
        ),
        (
            Op::Provision,
            vec![apply(deployment_path("fn-echo")).reply(status(503))],
            503,
            "Kubernetes API unavailable: the API says no (503)",
        ),
        (
            Op::Scale,
            vec![
                expect(
                    Method::PATCH,
                    format!("{}/scale", deployment_path("fn-echo")),
                )
                .reply(status(403)),
            ],
            502,
            "refused to scale Deployment fn-echo: the API says no (403)",
        ),
        (
            Op::Ready,
            vec![expect(Method::GET, deployment_path("fn-echo")).reply(refused)],
            503,
            "Kubernetes API unavailable: ",
        ),
        (
            Op::Ready,
            vec![expect(Method::GET, deployment_path("fn-echo")).reply(status(500))],
            502,
            "refused to read Deployment fn-echo",
        ),
        (
            // Every object is still attempted; the first failure is reported.
            Op::Deprovision,
            vec![
                delete(hpa_path("fn-echo"), 500),
                delete(service_path("fn-echo"), 200),
                delete(deployment_path("fn-echo"), 200),
            ],
            502,
            "refused to delete HorizontalPodAutoscaler fn-echo",
        ),
    ];
    for (op, script, http_status, message) in cases {
        let (p, server) = provider(script);
        let result = run(op, &p).await;
        let owners_left = lock(&p.owners).len();
        finish(p, server).await;
        let error = result.expect_err(&format!("{op:?} should fail"));
        match (&error, http_status) {
            (DeployError::Failed(_), 502) | (DeployError::Unavailable(_), 503) => {}
            _ => panic!("{op:?}: unexpected {error:?}"),
        }
        assert!(error.to_string().contains(message), "{op:?}: {error}");
        assert_eq!(ApiError::from(error).status().as_u16(), http_status);
        // A failed registration leaves no claim on the name behind.
        assert_eq!(owners_left, 0, "{op:?}");
    }
}

#[tokio::test]
async fn transport_errors_name_the_cause() {
    let (p, server) = provider(vec![
        expect(Method::GET, deployment_path("fn-echo"))
            .reply(Reply::Transport("connection refused")),
    ]);
    let error = p.ready_replicas("echo").await.unwrap_err();
    finish(p, server).await;
    let text = error.to_string();
    assert!(
        text.starts_with("Kubernetes API unavailable: ") && text.contains("connection refused"),
        "{text}"
    );
}

#[tokio::test]
async fn colliding_names_are_rejected_with_409() {
    let a_dot_b = spec(r#"{"name":"a.b","image":"i"}"#);
    let a_under_b = spec(r#"{"name":"A_b","image":"i"}"#);
    let provision = |name: &'static str| {
        vec![
            apply(deployment_path(name)),
            apply(service_path(name)),
            delete(hpa_path(name), 404),
        ]
    };
    let (p, server) = provider(
        [
            provision("fn-a-b"),
            vec![
                delete(hpa_path("fn-a-b"), 404),
                delete(service_path("fn-a-b"), 200),
                delete(deployment_path("fn-a-b"), 200),
            ],
            provision("fn-a-b"),
        ]
        .joined(),
    );
    p.provision(&a_dot_b).await.unwrap();
    // No request reaches the API for the second name, not even an image probe.
    let validate = p.validate_image(&a_under_b).await;
    let provision_again = p.provision(&a_under_b).await.map(drop);
    // The owner may re-provision; once it is deleted, the other name is free.
    p.deprovision("a.b").await.unwrap();
    let after_delete = p.provision(&a_under_b).await.map(drop);
    finish(p, server).await;
    let expected = DeployError::Conflict(
        "Function 'A_b' conflicts with function 'a.b': both map to the Kubernetes name \
         'fn-a-b'"
            .to_owned(),
    );
    assert_eq!(validate, Err(expected.clone()));
    assert_eq!(provision_again, Err(expected.clone()));
    assert_eq!(ApiError::from(expected).status().as_u16(), 409);
    after_delete.unwrap();
}

#[tokio::test]
async fn supports_deployment_mode_and_is_always_available() {
    let (p, server) = provider(vec![]);
    assert_eq!(p.id(), "k8s");
    assert!(p.is_available().await);
    assert!(p.supports(&echo()));
    let pool = spec(r#"{"name":"p","image":"i","executionMode":"POOL","endpointUrl":"http://x"}"#);
    assert!(!p.supports(&pool));
    // Image validation is off unless enabled: no probe pod.
    assert_eq!(p.validate_image(&echo()).await, Ok(()));
    finish(p, server).await;
}

fn probe_pod(status: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "imgval-echo-x",
        "namespace": NS}, "status": status})
}

fn create_probe() -> Exchange {
    expect(Method::POST, PODS)
        .body(|b| {
            let name = b["metadata"]["name"].as_str().unwrap();
            assert!(
                name.starts_with("imgval-echo-") && name.len() <= 63,
                "{name}"
            );
            assert_eq!(
                b["metadata"]["labels"],
                json!({"app": "nanofaas", "nanofaas.io/purpose": "image-validation",
                    "nanofaas.io/function": "echo"})
            );
            assert_eq!(
                b["spec"],
                json!({
                    "containers": [{"name": "validate", "image": "ghcr.io/acme/echo:1",
                        "imagePullPolicy": "Always"}],
                    "imagePullSecrets": [{"name": "regcred"}],
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 0
                })
            );
        })
        .reply(Reply::Echo)
}

fn poll_probe(status: Value) -> Exchange {
    expect(Method::GET, format!("{PODS}/imgval-echo-"))
        .prefix()
        .reply(Reply::Json(200, probe_pod(status)))
}

fn delete_probe(code: u16) -> Exchange {
    expect(Method::DELETE, format!("{PODS}/imgval-echo-"))
        .prefix()
        .body(|b| assert_eq!(b["gracePeriodSeconds"], 0, "{b}"))
        .reply(status(code))
}

#[tokio::test]
async fn image_validation_outcomes() {
    let image = "ghcr.io/acme/echo:1";
    let unavailable = |detail: &str| {
        DeployError::ImageRegistryUnavailable(format!(
            "Unable to validate image in registry: {image} ({detail})"
        ))
    };
    let cases: Vec<(&str, Vec<Exchange>, Result<(), DeployError>)> = vec![
        (
            "not found",
            vec![
                create_probe(),
                poll_probe(waiting("ErrImagePull", "manifest unknown")),
                delete_probe(200),
            ],
            Err(DeployError::ImageNotFound(format!(
                "Image not found in registry: {image}"
            ))),
        ),
        (
            "invalid name",
            vec![
                create_probe(),
                poll_probe(waiting("InvalidImageName", "bad reference")),
                delete_probe(200),
            ],
            Err(DeployError::ImageNotFound(format!(
                "Image not found in registry: {image}"
            ))),
        ),
        (
            "auth required",
            vec![
                create_probe(),
                poll_probe(waiting("ErrImagePull", "pull access denied for echo")),
                delete_probe(200),
            ],
            Err(DeployError::ImagePullAuthRequired(format!(
                "Image pull authentication failed for: {image}"
            ))),
        ),
        (
            "pull backoff",
            vec![
                create_probe(),
                poll_probe(waiting("ContainerCreating", "")),
                poll_probe(waiting("ImagePullBackOff", "Back-off pulling image")),
                delete_probe(404),
            ],
            Err(unavailable("ImagePullBackOff: Back-off pulling image")),
        ),
        (
            "ready",
            vec![
                create_probe(),
                poll_probe(json!({"phase": "Pending"})),
                poll_probe(json!({"phase": "Running"})),
                delete_probe(200),
            ],
            Ok(()),
        ),
        (
            "timeout",
            vec![
                create_probe(),
                poll_probe(waiting("ContainerCreating", "")).repeated(),
                delete_probe(200),
            ],
            Err(unavailable("Timed out waiting for image pull")),
        ),
        (
            "probe pod refused",
            vec![create_probe().reply(status(403))],
            Err(DeployError::Failed(
                "Kubernetes API refused to create image-validation Pod".to_owned(),
            )),
        ),
    ];
    let spec = spec(
        r#"{"name":"echo","image":"ghcr.io/acme/echo:1","imagePullSecrets":[" regcred ",""]}"#,
    );
    for (case, script, expected) in cases {
        let (p, server) = provider_with(script, true);
        let result = p.validate_image(&spec).await;
        finish(p, server).await;
        match (&result, &expected) {
            (Err(DeployError::Failed(got)), Err(DeployError::Failed(prefix))) => {
                assert!(got.starts_with(prefix), "{case}: {got}");
            }
            _ => assert_eq!(result, expected, "{case}"),
        }
    }
}

#[tokio::test]
async fn image_validation_without_api_is_registry_unavailable() {
    let (p, server) = provider_with(
        vec![create_probe().reply(Reply::Transport("connection refused"))],
        true,
    );
    let error = p
        .validate_image(&spec(
            r#"{"name":"echo","image":"ghcr.io/acme/echo:1","imagePullSecrets":["regcred"]}"#,
        ))
        .await
        .unwrap_err();
    finish(p, server).await;
    let text = error.to_string();
    assert!(
        matches!(error, DeployError::ImageRegistryUnavailable(_))
            && text.starts_with(
                "Unable to validate image in registry: ghcr.io/acme/echo:1 (Kubernetes API \
                 unavailable: "
            )
            && text.contains("connection refused"),
        "{text}"
    );
    assert_eq!(ApiError::from(error).status().as_u16(), 503);
}
