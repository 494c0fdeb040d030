//! Docker harness of the end-to-end tests (`tests/e2e_docker.rs`, `tests/e2e_ha_docker.rs`): the
//! FROM-scratch images of `scripts/build-images.sh` (tag `NANOFAAS_E2E_TAG`, default `local`),
//! driven through the `docker` CLI. Each test gets its own network and containers, labelled
//! with a unique id, and removes exactly those when it ends, failed or not. Without Docker or
//! the images a test fails when `CI=true` and is skipped otherwise.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tag() -> String {
    std::env::var("NANOFAAS_E2E_TAG").unwrap_or_else(|_| "local".to_owned())
}

pub fn cp_image() -> String {
    format!("nanofaas/control-plane:{}", tag())
}

pub fn runtime_image() -> String {
    format!("nanofaas/example-runtime:{}", tag())
}

pub fn nats_image() -> String {
    format!("nanofaas/nats:{}", tag())
}

pub fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI runs")
}

pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One test's Docker resources, removed on drop.
pub struct E2e {
    pub id: String,
    pub network: String,
}

impl E2e {
    /// `None` (skip) when Docker or one of `images` is missing outside CI; a failure in CI.
    pub fn setup(images: &[String]) -> Option<E2e> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let problem = if !Command::new("docker")
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            Some("no Docker Engine reachable".to_owned())
        } else {
            images
                .iter()
                .find(|image| !docker(&["image", "inspect", image]).status.success())
                .map(|image| format!("image {image} missing: run scripts/build-images.sh"))
        };
        if let Some(problem) = problem {
            assert!(!ci, "end-to-end tests need Docker in CI: {problem}");
            eprintln!("skipping Docker end-to-end test: {problem}");
            return None;
        }
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let network = format!("nfe2e-{id}");
        docker_ok(&[
            "network",
            "create",
            "--label",
            &format!("nanofaas-e2e={id}"),
            &network,
        ]);
        Some(E2e { id, network })
    }

    pub fn name(&self, role: &str) -> String {
        format!("nfe2e-{}-{role}", self.id)
    }

    /// Starts a container on the test network; returns its name.
    pub fn run(&self, role: &str, args: &[&str], image: &str) -> String {
        let name = self.name(role);
        let label = format!("nanofaas-e2e={}", self.id);
        let mut all = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &label,
            "--network",
            &self.network,
        ];
        all.extend_from_slice(args);
        all.push(image);
        docker_ok(&all);
        name
    }

    /// The loopback port Docker published for `port` of `container`.
    pub fn published(&self, container: &str, port: u16) -> u16 {
        let out = docker_ok(&["port", container, &format!("{port}/tcp")]);
        out.lines()
            .find_map(|l| l.rsplit(':').next().and_then(|p| p.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no published port in {out:?}"))
    }

    /// Containers the control plane created for this test (label `nanofaas.io/instance`).
    pub fn managed(&self, function: &str) -> Vec<String> {
        let out = docker_ok(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=nanofaas.io/instance={}", self.id),
            "--filter",
            &format!("label=nanofaas.io/function={function}"),
        ]);
        out.lines().map(str::to_owned).collect()
    }

    fn containers(&self, label: &str) -> Vec<String> {
        let ids = docker(&["ps", "-aq", "--filter", &format!("label={label}")]);
        String::from_utf8_lossy(&ids.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for E2e {
    fn drop(&mut self) {
        let labels = [
            format!("nanofaas-e2e={}", self.id),
            format!("nanofaas.io/instance={}", self.id),
        ];
        // A failed test shows what its containers said last.
        if std::thread::panicking() {
            for id in labels.iter().flat_map(|l| self.containers(l)) {
                let name = docker(&["inspect", "-f", "{{.Name}} {{.State.Status}}", &id]);
                let logs = docker(&["logs", "--tail", "40", &id]);
                eprintln!(
                    "---- container {}\n{}{}",
                    String::from_utf8_lossy(&name.stdout).trim(),
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
        }
        for label in &labels {
            let ids = self.containers(label);
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids.iter().map(String::as_str));
                let _ = docker(&args);
            }
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn wait_ready(management: &str) {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if c.get(format!("{management}/actuator/health/readiness"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("control plane at {management} never became ready");
}
