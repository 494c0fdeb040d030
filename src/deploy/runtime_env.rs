//! The environment a function's runtime container gets (REFERENCE §5.6), the same on every
//! deployment backend: the reserved keys the control plane sets, then the user's `env`.

use crate::function::FunctionSpec;

/// Environment the control plane sets for runtimes; user `env` cannot override these.
pub const RESERVED_ENV: [&str; 6] = [
    "FUNCTION_NAME",
    "WARM",
    "TIMEOUT_MS",
    "EXECUTION_MODE",
    "WATCHDOG_CMD",
    "CALLBACK_URL",
];

/// The runtime environment of REFERENCE §5.6, reserved keys first, then the user's, sorted.
pub fn runtime_env(spec: &FunctionSpec, callback_url: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("FUNCTION_NAME".to_owned(), spec.name.clone()),
        ("WARM".to_owned(), "true".to_owned()),
        ("TIMEOUT_MS".to_owned(), spec.timeout_ms.to_string()),
        ("EXECUTION_MODE".to_owned(), spec.runtime_mode.to_string()),
    ];
    if let Some(cmd) = spec
        .runtime_command
        .as_deref()
        .filter(|c| !c.trim().is_empty())
    {
        env.push(("WATCHDOG_CMD".to_owned(), cmd.to_owned()));
    }
    if let Some(url) = callback_url.filter(|u| !u.trim().is_empty()) {
        env.push(("CALLBACK_URL".to_owned(), url.to_owned()));
    }
    env.extend(
        spec.env
            .iter()
            .filter(|(k, _)| !RESERVED_ENV.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_env_puts_reserved_keys_first_and_filters_overrides() {
        let spec: crate::function::FunctionSpecRequest = serde_json::from_str(
            r#"{"name":"f","image":"i","timeoutMs":500,"runtimeCommand":"python app.py",
                "env":{"WARM":"false","B":"2","A":"1"}}"#,
        )
        .unwrap();
        let spec = spec
            .resolve(&crate::config::Config::default().defaults)
            .unwrap();
        let env = runtime_env(&spec, Some("http://cp:8080/v1/internal/executions"));
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        let expected: Vec<&str> = RESERVED_ENV.iter().copied().chain(["A", "B"]).collect();
        assert_eq!(keys, expected);
        assert_eq!(env[1].1, "true");
        assert_eq!(env[2].1, "500");
        assert_eq!(env[3].1, "HTTP");
        assert!(
            runtime_env(&spec, None)
                .iter()
                .all(|(k, _)| k != "CALLBACK_URL")
        );
    }
}
