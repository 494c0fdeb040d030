//! Scanning JSON text byte by byte without parsing it: which bytes are inside string literals.

/// Feeds on JSON text one byte at a time and tells whether each byte is outside every string
/// literal, so structural scans (nesting depth, number length, whitespace) need not know about
/// escapes. An opening quote counts as outside, a closing one as inside.
#[derive(Debug, Default)]
pub struct StringTracker {
    in_string: bool,
    escaped: bool,
}

impl StringTracker {
    pub fn outside(&mut self, b: u8) -> bool {
        if self.in_string {
            match (self.escaped, b) {
                (true, _) => self.escaped = false,
                (false, b'\\') => self.escaped = true,
                (false, b'"') => self.in_string = false,
                _ => {}
            }
            false
        } else {
            self.in_string = b == b'"';
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StringTracker;

    #[test]
    fn bytes_inside_strings_and_escapes_are_inside() {
        let text = br#"{"a\"b": [1, "x y"]}"#;
        let mut t = StringTracker::default();
        let outside: String = text
            .iter()
            .filter(|&&b| t.outside(b))
            .map(|&b| b as char)
            .collect();
        assert_eq!(outside, r#"{": [1, "]}"#);
    }
}
