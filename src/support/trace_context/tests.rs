use super::*;

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn is_valid_new_trace(tp: &str) -> bool {
    parse_traceparent(tp).as_deref() == Some(tp) && tp.starts_with("00-") && tp.ends_with("-01")
}

#[test]
fn a_valid_traceparent_is_kept_with_its_tracestate() {
    let c = TraceContext::from_request(&[VALID], ["congo=t61rcWkgMzE"], None);
    assert_eq!(c.traceparent(), VALID);
    assert_eq!(c.tracestate(), Some("congo=t61rcWkgMzE"));
    assert_eq!(c.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    // Surrounding blanks are header whitespace.
    let c = TraceContext::from_request(&[&format!(" {VALID}\t")], [], None);
    assert_eq!(c.traceparent(), VALID);
    assert_eq!(c.tracestate(), None);
}

#[test]
fn invalid_traceparents_start_a_new_trace_and_drop_tracestate() {
    let invalid = [
        "",
        "garbage",
        // Upper-case hex, all-zero ids, version ff, wrong separators, wrong lengths.
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
    ];
    for tp in invalid {
        let c = TraceContext::from_request(&[tp], ["a=b"], None);
        assert_ne!(c.traceparent(), tp);
        assert!(is_valid_new_trace(c.traceparent()), "{tp} -> {c:?}");
        assert_eq!(c.tracestate(), None, "{tp}");
    }
    // Sent twice: ignored.
    let c = TraceContext::from_request(&[VALID, VALID], [], None);
    assert_ne!(c.traceparent(), VALID);
    assert!(is_valid_new_trace(c.traceparent()));
}

#[test]
fn a_later_version_is_read_by_its_first_fields_and_written_as_00() {
    let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-the-future-says";
    assert_eq!(
        parse_traceparent(later).as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03")
    );
    let exact = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    assert_eq!(
        parse_traceparent(exact).as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
    );
}

#[test]
fn new_traces_are_random_valid_and_sampled() {
    let a = TraceContext::start(None);
    let b = TraceContext::start(None);
    assert!(is_valid_new_trace(a.traceparent()));
    assert!(is_valid_new_trace(b.traceparent()));
    assert_ne!(a.trace_id(), b.trace_id());
    assert_ne!(a.traceparent()[36..52], b.traceparent()[36..52]);
}

#[test]
fn x_trace_id_names_the_new_trace_when_it_is_a_w3c_trace_id() {
    let hex = TraceContext::from_request(&[], [], Some("4BF92F3577B34DA6A3CE929D0E0E4736"));
    assert_eq!(hex.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(is_valid_new_trace(hex.traceparent()));
    let uuid = TraceContext::from_request(
        &["invalid"],
        [],
        Some("0f8fad5b-d9cb-469f-a165-70867728950e"),
    );
    assert_eq!(uuid.trace_id(), "0f8fad5bd9cb469fa16570867728950e");
    for other in ["trace-1", "00000000000000000000000000000000", "abc", ""] {
        let c = TraceContext::from_request(&[], [], Some(other));
        assert!(is_valid_new_trace(c.traceparent()), "{other}");
        assert_ne!(c.trace_id(), "00000000000000000000000000000000");
    }
    // A valid traceparent wins over X-Trace-Id.
    let both =
        TraceContext::from_request(&[VALID], [], Some("0f8fad5b-d9cb-469f-a165-70867728950e"));
    assert_eq!(both.traceparent(), VALID);
}

#[test]
fn tracestate_is_checked_joined_and_cut() {
    let norm = |v: &[&str]| normalise_tracestate(v.iter().copied());
    assert_eq!(
        norm(&["rojo=00f067aa0ba902b7, congo=t61rcWkgMzE", "x@y=1"]).as_deref(),
        Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,x@y=1")
    );
    assert_eq!(norm(&[" , ,"]), None);
    // Blanks around members are list whitespace; inside a value they are kept.
    assert_eq!(norm(&["k=in side  "]).as_deref(), Some("k=in side"));
    assert_eq!(norm(&[]), None);
    // Bad keys, bad values, duplicates: the whole header goes.
    for bad in [
        "Upper=1",
        "1abc=1",
        "k=",
        "k=a,b=c=d",
        "k=del\u{7f}",
        "k=é",
        "novalue",
        "a=1,a=2",
        "t@Sys=1",
        "t@systemnametoolong=1",
    ] {
        assert_eq!(norm(&[bad]), None, "{bad}");
    }
    let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    assert_eq!(norm(&[&many.join(",")]), None);
    let many: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
    assert_eq!(norm(&[&many.join(",")]), Some(many.join(",")));
    // Over 512: long members first, then from the end.
    let long = format!("long={}", "x".repeat(200));
    let short: Vec<String> = (0..20)
        .map(|i| format!("key{i:02}={}", "y".repeat(14)))
        .collect();
    let input = format!("{},{long},{}", short[..10].join(","), short[10..].join(","));
    let cut = norm(&[&input]).unwrap();
    assert!(!cut.contains("long="));
    assert_eq!(cut, short.join(","));
    let too_many_short: Vec<String> = (0..30)
        .map(|i| format!("key{i:02}={}", "y".repeat(14)))
        .collect();
    let cut = norm(&[&too_many_short.join(",")]).unwrap();
    assert!(cut.len() <= 512);
    assert!(cut.starts_with("key00="));
    assert!(too_many_short.join(",").starts_with(&cut));
}

#[test]
fn stored_contexts_are_reused_when_valid() {
    let c = TraceContext::from_stored(Some(VALID), Some("a=b"));
    assert_eq!((c.traceparent(), c.tracestate()), (VALID, Some("a=b")));
    let c = TraceContext::from_stored(None, Some("a=b"));
    assert!(is_valid_new_trace(c.traceparent()));
    assert_eq!(c.tracestate(), None);
}
