use super::*;
use crate::model::json_string;

fn record() -> ExecutionRecord {
    let mut task = test_task("e1");
    task.idempotency_key = Some(Arc::from("k"));
    ExecutionRecord::new(task)
}

#[test]
fn transition_table() {
    use ExecutionState::*;
    // (path of transitions, expected final state)
    let cases: &[(&[&str], ExecutionState)] = &[
        (&[], Queued),
        (&["run"], Running),
        (&["success"], Success),
        (&["run", "success"], Success),
        (&["run", "error"], Error),
        (&["run", "timeout"], Timeout),
        (&["run", "retry"], Queued),
        (&["retry", "retry"], Queued),
        (&["timeout", "success"], Timeout),
        (&["error", "success"], Error),
        (&["success", "error"], Success),
        (&["success", "run"], Success),
        (&["timeout", "retry"], Timeout),
    ];
    for (path, expected) in cases {
        let mut r = record();
        for step in *path {
            match *step {
                "run" => r.mark_running(Stamp::now()),
                "success" => {
                    r.finish(Success, Some(json_string("o")), None);
                }
                "error" => {
                    r.finish(Error, None, Some(ErrorInfo::new("E", "m")));
                }
                "timeout" => {
                    r.finish(Timeout, None, None);
                }
                "retry" => {
                    r.reset_for_retry();
                }
                _ => unreachable!(),
            }
        }
        assert_eq!(r.state, *expected, "{path:?}");
    }
}

#[test]
fn retry_reset_clears_results_and_drops_the_idempotency_key() {
    let mut r = record();
    r.mark_running(Stamp::now());
    r.cold_start = true;
    r.init_duration_ms = Some(5);
    let task = r.reset_for_retry().unwrap();
    assert_eq!((task.attempt, r.attempt), (2, 2));
    assert!(task.idempotency_key.is_none());
    assert!(r.started.is_none() && !r.cold_start && r.init_duration_ms.is_none());
    assert_eq!(r.state, ExecutionState::Queued);
}

#[test]
fn terminal_records_keep_their_result_and_release_the_payload() {
    let mut r = record();
    r.mark_running(Stamp::now());
    assert!(r.finish(ExecutionState::Error, None, Some(ErrorInfo::new("E", "m"))));
    assert!(r.task.is_none());
    assert!(!r.finish(ExecutionState::Success, Some(json_string("late")), None));
    assert!(matches!(r.outcome(), Some(Outcome::Error(e)) if e.code == "E"));
    let s = r.status();
    assert_eq!(s.status, ExecutionState::Error);
    assert!(s.started_at.is_some() && s.finished_at.is_some());
}
