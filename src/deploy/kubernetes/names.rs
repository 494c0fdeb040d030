//! Object names derived from function names: DNS-1123 resource names, label values and the
//! image-validation pod's name.

/// `fn-<name>`: lower-cased, characters outside `[a-z0-9-]` turned into `-`, at most 63
/// characters, no leading or trailing `-` (a DNS-1123 label, so also a valid Service name).
pub fn resource_name(function: &str) -> String {
    let mapped: String = function
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    // ASCII only from here, so byte slicing is on character boundaries.
    let body = mapped[..mapped.len().min(63 - "fn-".len())].trim_matches('-');
    if body.is_empty() {
        "fn".to_owned()
    } else {
        format!("fn-{body}")
    }
}

/// The `function` label value: the name itself when it is a valid label value, else the name
/// with invalid characters turned into `-` and the ends trimmed to alphanumerics. Two functions
/// with the same label value also have the same resource name, so labels stay unique.
pub fn label_value(function: &str) -> String {
    let mapped: String = function
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped[..mapped.len().min(63)]
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// `imgval-<normalised name>-<suffix>` (REFERENCE §5.5): lower-cased, `[^a-z0-9-]` → `-`, runs of
/// `-` collapsed, trimmed, the name part shortened so the whole stays within 63 characters.
pub fn validation_pod_name(function: &str, suffix: &str) -> String {
    let normalised = crate::deploy::dns_safe(function);
    let room = 63usize.saturating_sub("imgval-".len() + 1 + suffix.len());
    let normalised = normalised[..normalised.len().min(room)].trim_end_matches('-');
    if normalised.is_empty() {
        format!("imgval-{suffix}")
    } else {
        format!("imgval-{normalised}-{suffix}")
    }
}

/// The current time in nanoseconds, base 36 (the probe pod's unique suffix).
pub(super) fn nano_suffix() -> String {
    let mut n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}
