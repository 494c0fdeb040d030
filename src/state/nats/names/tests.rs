use super::*;
use proptest::prelude::*;

#[test]
fn function_names_map_to_valid_tokens() {
    assert_eq!(encode_token("echo"), "echo");
    assert_eq!(encode_token("my-fn"), "my-fn");
    assert_eq!(encode_token("a.b"), "a_2Eb");
    assert_eq!(encode_token("a_b"), "a_5Fb");
    assert_eq!(encode_token("f."), "f_2E");
    assert_eq!(encode_token(""), "_");
}

#[test]
fn names_carry_the_prefix() {
    let n = Names::new("nf").unwrap();
    assert_eq!(n.functions_bucket(), "nf_functions");
    assert_eq!(n.invocation_stream("a.b"), "nf_invocations_a_2Eb");
    assert_eq!(n.invoke_subject("a.b"), "nf.invoke.a_2Eb");
    assert_eq!(n.done_subject("e-1"), "nf.done.e-1");
    assert_eq!(n.complete_subject(), "nf.complete");
}

#[test]
fn prefixes_are_checked() {
    assert!(Names::new("nanofaas").is_ok());
    assert!(Names::new("a_b-C9").is_ok());
    for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(33)] {
        assert_eq!(Names::new(bad), Err(InvalidPrefix(bad.to_owned())), "{bad}");
    }
}

#[test]
fn foreign_strings_do_not_decode() {
    // Lower-case hex is never produced, so accepting it would make two tokens decode alike.
    for bad in ["a.b", "_2", "_zz", "_2e", "a b"] {
        assert_eq!(decode_token(bad), None, "{bad}");
    }
    assert_eq!(decode_token("_"), Some(String::new()));
}

proptest! {
    #[test]
    fn encoding_is_injective_and_reversible(raw in ".{0,40}") {
        let token = encode_token(&raw);
        prop_assert!(!token.is_empty());
        prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        prop_assert_eq!(decode_token(&token), Some(raw));
    }
}
