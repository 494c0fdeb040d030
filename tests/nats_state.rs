//! The NATS JetStream building blocks (`state::nats`) against a real nats-server started per
//! test: KV races and watches, the invocation queue's bounds and redelivery, durability across a
//! SIGKILL of the broker, execution CAS, the leader lease and the callback route. Every test
//! counts what it stored and what came back; the difference must be zero.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::nats::NatsServer;
use futures_util::future::BoxFuture;
use nanofaas_control_plane::state::nats::callbacks::{
    CompletionHandler, CompletionRequest, CompletionRoute, DoneNotifier, RouteOutcome,
};
use nanofaas_control_plane::state::nats::kv_executions::{
    ExecutionRecords, ExecutionStoreError, Transition,
};
use nanofaas_control_plane::state::nats::kv_functions::{
    FunctionEvent, FunctionStore, FunctionStoreError,
};
use nanofaas_control_plane::state::nats::kv_idempotency::{Claim, IdempotencyClaims};
use nanofaas_control_plane::state::nats::lease::{Leadership, LeaseError, Leases};
use nanofaas_control_plane::state::nats::queue::{
    Delivery, DeliverySink, FunctionQueueConfig, InvocationQueue, PublishError,
};
use nanofaas_control_plane::state::nats::{
    ConnectError, ConnectionState, NatsConnection, NatsSettings, Placement,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "t";

async fn connect(server: &NatsServer) -> NatsConnection {
    let mut settings = NatsSettings::new(&server.url);
    settings.prefix = PREFIX.to_owned();
    settings.connect_timeout = Duration::from_secs(5);
    NatsConnection::connect(&settings)
        .await
        .expect("connects to the test server")
}

fn placement() -> Placement {
    Placement::default()
}

/// Waits for `cond` with a bound; the bound is a failure, not a pass.
async fn eventually(what: &str, within: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "MEASURE {what}: n={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_create_only_across_clients() {
    let server = NatsServer::start().await;
    let a = FunctionStore::open(&connect(&server).await, placement())
        .await
        .unwrap();
    let b = FunctionStore::open(&connect(&server).await, placement())
        .await
        .unwrap();
    let mut wins = 0;
    let mut refusals = 0;
    for i in 0..50 {
        let name = format!("fn-{i}");
        let (ra, rb) = tokio::join!(
            a.create(&name, Bytes::from_static(b"a")),
            b.create(&name, Bytes::from_static(b"b"))
        );
        for r in [ra, rb] {
            match r {
                Ok(_) => wins += 1,
                Err(FunctionStoreError::AlreadyExists(n)) if n == name => refusals += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }
    assert_eq!((wins, refusals), (50, 50));

    // A deleted name is free again; CAS and delete refuse a stale revision.
    let entry = a.get("fn-0").await.unwrap().unwrap();
    assert!(matches!(
        a.update("fn-0", Bytes::from_static(b"x"), entry.revision + 100)
            .await,
        Err(FunctionStoreError::Conflict(_))
    ));
    let rev = a
        .update("fn-0", Bytes::from_static(b"x"), entry.revision)
        .await
        .unwrap();
    assert!(matches!(
        b.delete("fn-0", entry.revision).await,
        Err(FunctionStoreError::Conflict(_))
    ));
    b.delete("fn-0", rev).await.unwrap();
    assert_eq!(a.get("fn-0").await.unwrap(), None);
    a.create("fn-0", Bytes::from_static(b"again"))
        .await
        .unwrap();
    // Names a subject or a stream could not carry as they are.
    a.create("a.b", Bytes::from_static(b"dots")).await.unwrap();
    a.create("a_2Eb", Bytes::from_static(b"lookalike"))
        .await
        .unwrap();
    assert_eq!(a.get("a.b").await.unwrap().unwrap().value, "dots");
    assert_eq!(a.get("a_2Eb").await.unwrap().unwrap().value, "lookalike");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_other_clients_and_survives_a_broker_restart() {
    let mut server = NatsServer::start().await;
    let writer_conn = connect(&server).await;
    let writer = FunctionStore::open(&writer_conn, placement())
        .await
        .unwrap();
    writer
        .create("pre", Bytes::from_static(b"1"))
        .await
        .unwrap();
    writer
        .create("gone", Bytes::from_static(b"1"))
        .await
        .unwrap();
    let gone = writer.get("gone").await.unwrap().unwrap();
    writer.delete("gone", gone.revision).await.unwrap();

    let reader_conn = connect(&server).await;
    let reader = FunctionStore::open(&reader_conn, placement())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let (snapshot, mut watch) = reader.watch(stop.clone()).await.unwrap();
    let names: Vec<&str> = snapshot.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["pre"]);

    // Changes from another client arrive in order; measure the propagation delay.
    let mut delays = Vec::new();
    for i in 0..200 {
        let name = format!("w-{i}");
        let sent = Instant::now();
        let rev = writer
            .create(&name, Bytes::from_static(b"v"))
            .await
            .unwrap();
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("event within 5 s")
            .unwrap();
        delays.push(sent.elapsed());
        assert_eq!(
            event,
            FunctionEvent::Put {
                name,
                value: Bytes::from_static(b"v"),
                revision: rev
            }
        );
    }
    report("kv watch propagation (create on A -> event on B)", delays);

    let pre = writer.get("pre").await.unwrap().unwrap();
    writer.delete("pre", pre.revision).await.unwrap();
    assert!(matches!(
        watch.next().await,
        Some(FunctionEvent::Delete { name, .. }) if name == "pre"
    ));

    // SIGKILL the broker, write after it is back: the watch re-opens and misses nothing.
    server.kill();
    let reader_state = reader_conn.reporter();
    eventually(
        "reader sees the loss",
        Duration::from_secs(10),
        async || reader_state.state() != ConnectionState::Connected,
    )
    .await;
    server.restart().await;
    let back = Instant::now();
    let mut writer_state = writer_conn.reporter();
    assert!(writer_state.wait_connected(Duration::from_secs(15)).await);
    let mut expected = Vec::new();
    for i in 0..20 {
        let name = format!("after-{i}");
        writer
            .create(&name, Bytes::from_static(b"v"))
            .await
            .unwrap();
        expected.push(name);
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        match tokio::time::timeout(Duration::from_secs(20), watch.next()).await {
            Ok(Some(FunctionEvent::Put { name, .. })) => seen.push(name),
            other => panic!("expected a put after the restart, got {other:?}"),
        }
    }
    assert_eq!(seen, expected, "lost or reordered changes: {seen:?}");
    println!(
        "MEASURE watch caught up after the broker restart: {:?}",
        back.elapsed()
    );
    assert!(reader_conn.reporter().reconnects() >= 1);
    stop.cancel();
    assert_eq!(watch.next().await, None);
}

fn queue_config(capacity: i64, concurrency: i64, ack_wait: Duration) -> FunctionQueueConfig {
    FunctionQueueConfig {
        capacity,
        concurrency,
        ack_wait,
        max_payload_bytes: 64 * 1024,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_beyond_capacity_is_refused_and_ids_dedupe() {
    let server = NatsServer::start().await;
    let conn = connect(&server).await;
    let queue = InvocationQueue::new(&conn, placement());
    assert!(matches!(
        queue.publish("nope", "e", Bytes::new()).await,
        Err(PublishError::NoQueue(_))
    ));
    queue
        .ensure_function("f.one", &queue_config(3, 1, Duration::from_secs(30)))
        .await
        .unwrap();
    for i in 0..3 {
        let p = queue
            .publish("f.one", &format!("e{i}"), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert!(!p.duplicate);
    }
    // The same execution id again is a duplicate, not a fourth message, even when full.
    let again = queue
        .publish("f.one", "e1", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert!(matches!(
        queue.publish("f.one", "e3", Bytes::from_static(b"{}")).await,
        Err(PublishError::QueueFull(f)) if f == "f.one"
    ));
    let depth = queue.depth("f.one").await.unwrap();
    assert_eq!((depth.pending, depth.in_flight), (3, 0));
    assert!(matches!(
        queue
            .publish("f.one", "big", Bytes::from(vec![0u8; 100 * 1024]))
            .await,
        Err(PublishError::TooLarge { .. })
    ));

    // Raising the bound (a re-registration) lets more in; removal drops everything.
    queue
        .ensure_function("f.one", &queue_config(4, 1, Duration::from_secs(30)))
        .await
        .unwrap();
    queue
        .publish("f.one", "e3", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    queue.remove_function("f.one").await.unwrap();
    queue.remove_function("f.one").await.unwrap();
    assert!(matches!(
        queue.publish("f.one", "e4", Bytes::new()).await,
        Err(PublishError::NoQueue(_))
    ));

    // Publish latency of a stored (acknowledged) invocation on loopback.
    queue
        .ensure_function("lat", &queue_config(10_000, 1, Duration::from_secs(30)))
        .await
        .unwrap();
    let mut samples = Vec::new();
    for i in 0..500 {
        let t = Instant::now();
        queue
            .publish(
                "lat",
                &format!("l{i}"),
                Bytes::from_static(b"{\"input\":1}"),
            )
            .await
            .unwrap();
        samples.push(t.elapsed());
    }
    report("queue publish (stored + acked by JetStream)", samples);
}

/// A sink that records what it is handed.
fn channel_sink() -> (Arc<dyn DeliverySink>, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Arc::new(move |d: Delivery| {
            let _ = tx.send(d);
        }),
        rx,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ack_pending_caps_concurrency_across_clients() {
    let server = NatsServer::start().await;
    let publisher = InvocationQueue::new(&connect(&server).await, placement());
    publisher
        .ensure_function("busy", &queue_config(100, 2, Duration::from_secs(30)))
        .await
        .unwrap();
    const N: usize = 30;
    for i in 0..N {
        publisher
            .publish("busy", &format!("e{i}"), Bytes::new())
            .await
            .unwrap();
    }
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = CancellationToken::new();
    let mut loops = Vec::new();
    for _ in 0..2 {
        let queue = InvocationQueue::new(&connect(&server).await, placement());
        let (running, peak, done) = (running.clone(), peak.clone(), done.clone());
        let sink = move |d: Delivery| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let (running, done) = (running.clone(), done.clone());
            tokio::spawn(async move {
                // The "runtime" takes a while, so deliveries would overlap if the broker let them.
                tokio::time::sleep(Duration::from_millis(30)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                let id = d.execution_id.clone();
                d.ack().await.unwrap();
                done.lock().unwrap().push(id);
            });
        };
        loops.push(queue.spawn_pull_loop("busy", Arc::new(sink), stop.clone()));
    }
    eventually("all executions ran", Duration::from_secs(30), async || {
        done.lock().unwrap().len() >= N
    })
    .await;
    let done = done.lock().unwrap().clone();
    let unique: BTreeSet<&String> = done.iter().collect();
    assert_eq!(unique.len(), N, "lost or duplicated: {done:?}");
    assert_eq!(done.len(), N, "ran twice: {done:?}");
    assert!(
        peak.load(Ordering::SeqCst) <= 2,
        "peak concurrency {} > 2",
        peak.load(Ordering::SeqCst)
    );
    assert_eq!(peak.load(Ordering::SeqCst), 2, "both slots should be used");
    stop.cancel();
    for l in loops {
        l.await.unwrap();
    }
    let depth = publisher.depth("busy").await.unwrap();
    assert_eq!((depth.pending, depth.in_flight), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacked_delivery_returns_after_ack_wait_and_a_nak_retries() {
    let server = NatsServer::start().await;
    let conn = connect(&server).await;
    let queue = InvocationQueue::new(&conn, placement());
    let ack_wait = Duration::from_secs(1);
    queue
        .ensure_function("slow", &queue_config(10, 1, ack_wait))
        .await
        .unwrap();
    queue
        .publish("slow", "x1", Bytes::from_static(b"p"))
        .await
        .unwrap();
    let (sink, mut rx) = channel_sink();
    let stop = CancellationToken::new();
    let task = queue.spawn_pull_loop("slow", sink, stop.clone());
    let first = rx.recv().await.unwrap();
    assert_eq!((first.execution_id.as_str(), first.attempt), ("x1", 1));
    assert_eq!(first.payload, "p");
    let held = Instant::now();
    // Not acked (the replica "died"): delivered again after ack_wait, attempt 2.
    let second = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let after = held.elapsed();
    assert_eq!((second.execution_id.as_str(), second.attempt), ("x1", 2));
    assert!(after >= ack_wait - Duration::from_millis(100), "{after:?}");
    println!("MEASURE redelivery after ack_wait {ack_wait:?}: {after:?}");
    // The stale first delivery's ack is refused by nobody but changes nothing either; a nak
    // with a delay is the retry path.
    second.nak(Duration::from_millis(200)).await.unwrap();
    let third = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.attempt, 3);
    third.ack().await.unwrap();
    assert!(
        tokio::time::timeout(ack_wait * 2, rx.recv()).await.is_err(),
        "an acked message came back"
    );
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_retry_keeps_its_place_in_the_stream_but_not_in_max_ack_pending() {
    let server = NatsServer::start().await;
    let conn = connect(&server).await;
    let queue = InvocationQueue::new(&conn, placement());
    queue
        .ensure_function("one", &queue_config(3, 1, Duration::from_secs(30)))
        .await
        .unwrap();
    for id in ["x1", "x2"] {
        queue
            .publish("one", id, Bytes::from_static(b"body"))
            .await
            .unwrap();
    }
    let (sink, mut rx) = channel_sink();
    let stop = CancellationToken::new();
    let dispatch = queue.spawn_pull_loop("one", sink, stop.clone());
    let mover = queue.spawn_retry_mover("one", stop.clone());
    let first = rx.recv().await.unwrap();
    assert_eq!(first.execution_id, "x1");
    // Its retry, due in 2 s, is stored before the delivery is let go (so for a moment both
    // take a place of the capacity).
    let delay = Duration::from_secs(2);
    queue
        .publish_retry("one", "x1", 2, first.payload.clone(), delay)
        .await
        .unwrap();
    let stored_at = Instant::now();
    first.ack().await.unwrap();
    // Concurrency 1, and the waiting retry does not take it: x2 comes at once.
    let second = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("the next invocation was not held back by the delayed retry")
        .unwrap();
    assert_eq!(second.execution_id, "x2");
    // Capacity 3: x2, the waiting retry and one more.
    let stored: Vec<String> = queue
        .stored("one")
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(stored, ["x2", "x1"]);
    queue.publish("one", "x3", Bytes::new()).await.unwrap();
    assert!(matches!(
        queue.publish("one", "x4", Bytes::new()).await,
        Err(PublishError::QueueFull(_))
    ));
    second.ack().await.unwrap();
    let third = rx.recv().await.unwrap();
    assert_eq!(third.execution_id, "x3");
    third.ack().await.unwrap();
    // Due: moved to the invocations and delivered as one, with its execution id and body.
    let retried = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let waited = stored_at.elapsed();
    assert_eq!(
        (retried.execution_id.as_str(), &retried.payload[..]),
        ("x1", &b"body"[..])
    );
    assert!(waited >= delay - Duration::from_millis(50), "{waited:?}");
    println!("MEASURE delayed retry of {delay:?} delivered after {waited:?}");
    retried.ack().await.unwrap();
    eventually("the stream is empty", Duration::from_secs(5), async || {
        queue.stored("one").await.unwrap().is_empty()
    })
    .await;
    stop.cancel();
    dispatch.await.unwrap();
    mover.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_stored_is_lost_across_a_broker_sigkill() {
    let mut server = NatsServer::start().await;
    let conn = connect(&server).await;
    let queue = InvocationQueue::new(&conn, placement());
    queue
        .ensure_function("durable", &queue_config(10_000, 50, Duration::from_secs(2)))
        .await
        .unwrap();
    const N: usize = 1000;
    let mut accepted = BTreeSet::new();
    for i in 0..N {
        let id = format!("e{i:04}");
        queue.publish("durable", &id, Bytes::new()).await.unwrap();
        accepted.insert(id);
    }
    // One pull loop runs through the whole outage and acks what it gets. After a broker SIGKILL,
    // up to max_ack_pending messages whose acks were confirmed come back, for a few ack_waits
    // (docs/ha.md, "A broker crash can redeliver acked messages"). So the dispatcher must skip a
    // delivery whose execution record is already terminal; here they are counted, and nothing
    // stored may be missing.
    let (sink, mut rx) = channel_sink();
    let stop = CancellationToken::new();
    let task = queue.spawn_pull_loop("durable", sink, stop.clone());
    let acked = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let acked_redelivered = Arc::new(Mutex::new(Vec::<u64>::new()));
    let failed_acks = Arc::new(AtomicUsize::new(0));
    let consumer = {
        let (acked, acked_redelivered, failed_acks) = (
            acked.clone(),
            acked_redelivered.clone(),
            failed_acks.clone(),
        );
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                if acked.lock().unwrap().contains(&d.execution_id) {
                    acked_redelivered.lock().unwrap().push(d.attempt);
                }
                match d.ack().await {
                    Ok(()) => {
                        acked.lock().unwrap().insert(d.execution_id.clone());
                    }
                    Err(_) => {
                        failed_acks.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    eventually(
        "400 acked before the kill",
        Duration::from_secs(30),
        async || acked.lock().unwrap().len() >= 400,
    )
    .await;
    server.kill();
    let acked_at_kill = acked.lock().unwrap().len();
    server.restart().await;
    let back = Instant::now();
    let mut state = conn.reporter();
    assert!(state.wait_connected(Duration::from_secs(15)).await);
    eventually(
        "everything acked after the restart",
        Duration::from_secs(60),
        async || acked.lock().unwrap().len() >= N,
    )
    .await;
    println!(
        "MEASURE pull loop drained the rest after the broker restart: {:?}",
        back.elapsed()
    );
    stop.cancel();
    task.await.unwrap();
    consumer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let redelivered = acked_redelivered.lock().unwrap().clone();
    let lost = accepted.difference(&acked).count();
    println!(
        "COUNT broker SIGKILL: accepted={} acked_at_kill={acked_at_kill} acked_total={} lost={lost} \
         acked_then_redelivered={} (attempts {:?}) acks_failed_in_outage={}",
        accepted.len(),
        acked.len(),
        redelivered.len(),
        redelivered.iter().collect::<BTreeSet<_>>(),
        failed_acks.load(Ordering::SeqCst)
    );
    assert_eq!(lost, 0);
    // Bounded: a few rounds of at most max_ack_pending (50), never the whole backlog.
    assert!(
        redelivered.len() <= 4 * 50,
        "{} redelivered",
        redelivered.len()
    );
    let depth = queue.depth("durable").await.unwrap();
    assert_eq!((depth.pending, depth.in_flight), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_records_compare_and_set() {
    let server = NatsServer::start().await;
    let a = ExecutionRecords::open(
        &connect(&server).await,
        Duration::from_secs(60),
        placement(),
    )
    .await
    .unwrap();
    let b = ExecutionRecords::open(
        &connect(&server).await,
        Duration::from_secs(60),
        placement(),
    )
    .await
    .unwrap();
    let r0 = a
        .create("ex-1", Bytes::from_static(b"QUEUED"))
        .await
        .unwrap();
    assert!(matches!(
        b.create("ex-1", Bytes::from_static(b"QUEUED")).await,
        Err(ExecutionStoreError::AlreadyExists(_))
    ));
    let r1 = a
        .update("ex-1", Bytes::from_static(b"RUNNING"), r0)
        .await
        .unwrap();
    // b read at r0 and is now stale.
    assert!(matches!(
        b.update("ex-1", Bytes::from_static(b"FAILED"), r0).await,
        Err(ExecutionStoreError::Conflict(_))
    ));
    let got = b.get("ex-1").await.unwrap().unwrap();
    assert_eq!((got.value.as_ref(), got.revision), (&b"RUNNING"[..], r1));

    // Racing transitions to a terminal state: exactly one wins, the other sees it final.
    let terminal = |to: &'static [u8]| {
        move |current: &Bytes| (current.as_ref() == b"RUNNING").then(|| Bytes::from_static(to))
    };
    let (ta, tb) = tokio::join!(
        a.transition("ex-1", terminal(b"SUCCESS")),
        b.transition("ex-1", terminal(b"TIMEOUT"))
    );
    let outcomes = [ta.unwrap(), tb.unwrap()];
    let applied: Vec<&Transition> = outcomes
        .iter()
        .filter(|t| matches!(t, Transition::Applied(_)))
        .collect();
    assert_eq!(applied.len(), 1, "{outcomes:?}");
    let Transition::Applied(winner) = applied[0] else {
        unreachable!()
    };
    let final_value = a.get("ex-1").await.unwrap().unwrap().value;
    assert_eq!(final_value, winner.value);
    assert!(
        outcomes
            .iter()
            .any(|t| matches!(t, Transition::Unchanged(v) if v.value == winner.value))
    );
    assert_eq!(
        a.transition("missing", |_| Some(Bytes::new()))
            .await
            .unwrap(),
        Transition::Missing
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_claims_have_one_winner() {
    let server = NatsServer::start().await;
    let a = IdempotencyClaims::open(
        &connect(&server).await,
        Duration::from_secs(300),
        placement(),
    )
    .await
    .unwrap();
    let b = IdempotencyClaims::open(
        &connect(&server).await,
        Duration::from_secs(300),
        placement(),
    )
    .await
    .unwrap();
    let (ca, cb) = tokio::join!(
        a.claim("fn", "key with spaces/and:colons", "exec-a"),
        b.claim("fn", "key with spaces/and:colons", "exec-b")
    );
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    let winner = match (&ca, &cb) {
        (Claim::Won { .. }, Claim::Taken { execution_id }) => {
            assert_eq!(execution_id, "exec-a");
            "exec-a"
        }
        (Claim::Taken { execution_id }, Claim::Won { .. }) => {
            assert_eq!(execution_id, "exec-b");
            "exec-b"
        }
        other => panic!("expected one winner: {other:?}"),
    };
    assert_eq!(
        a.winner("fn", "key with spaces/and:colons")
            .await
            .unwrap()
            .as_deref(),
        Some(winner)
    );
    // The same key for another function is another claim.
    assert!(matches!(
        a.claim("other", "key with spaces/and:colons", "exec-c")
            .await
            .unwrap(),
        Claim::Won { .. }
    ));
    // A released claim frees the key.
    let Claim::Won { revision } = a.claim("fn", "k2", "exec-d").await.unwrap() else {
        panic!("fresh key")
    };
    a.release("fn", "k2", revision).await.unwrap();
    assert!(matches!(
        b.claim("fn", "k2", "exec-e").await.unwrap(),
        Claim::Won { .. }
    ));
    // Released by execution id (a refused enqueue): only the claim naming that id goes.
    a.release_for("fn", "k2", "exec-d").await.unwrap();
    assert_eq!(
        a.winner("fn", "k2").await.unwrap().as_deref(),
        Some("exec-e")
    );
    a.release_for("fn", "k2", "exec-e").await.unwrap();
    assert_eq!(a.winner("fn", "k2").await.unwrap(), None);
    a.release_for("fn", "k2", "exec-e").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_is_exclusive_fenced_and_fails_over_within_its_ttl() {
    let server = NatsServer::start().await;
    // Long enough that a loaded CI machine pausing the renewing task for a second cannot make
    // the lease lapse by accident.
    let ttl = Duration::from_secs(3);
    let a = Leases::open(&connect(&server).await, ttl, placement())
        .await
        .unwrap();
    let b = Leases::open(&connect(&server).await, ttl, placement())
        .await
        .unwrap();
    let mut token = a.try_acquire("autoscaler", "A").await.unwrap().unwrap();
    let first = token;
    // While A renews (every ttl/6), B never gets it, for well over one TTL.
    let until = Instant::now() + ttl * 2;
    while Instant::now() < until {
        assert_eq!(b.try_acquire("autoscaler", "B").await.unwrap(), None);
        tokio::time::sleep(ttl / 6).await;
        token = a.renew("autoscaler", "A", token).await.unwrap();
    }
    assert!(token > first);
    assert_eq!(
        b.holder("autoscaler").await.unwrap(),
        Some(("A".to_owned(), token))
    );
    // A stops renewing: B acquires within the TTL (plus the broker's expiry tick).
    let stopped = Instant::now();
    let b_token = loop {
        if let Some(t) = b.try_acquire("autoscaler", "B").await.unwrap() {
            break t;
        }
        assert!(stopped.elapsed() < ttl * 2, "no failover within 2 TTLs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let failover = stopped.elapsed();
    println!("MEASURE lease failover (ttl {ttl:?}, polled every 20 ms): {failover:?}");
    assert!(failover >= ttl - Duration::from_millis(200), "{failover:?}");
    assert!(b_token > token, "fencing tokens grow across holders");
    // The stale holder's fenced write is refused, and so is its release.
    assert!(matches!(
        a.renew("autoscaler", "A", token).await,
        Err(LeaseError::Lost(_))
    ));
    assert!(matches!(
        a.release("autoscaler", token).await,
        Err(LeaseError::Lost(_))
    ));
    assert_eq!(
        a.holder("autoscaler").await.unwrap(),
        Some(("B".to_owned(), b_token))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn electors_have_one_leader_and_hand_over_on_stop() {
    let server = NatsServer::start().await;
    let ttl = Duration::from_secs(2);
    let a = Leases::open(&connect(&server).await, ttl, placement())
        .await
        .unwrap();
    let b = Leases::open(&connect(&server).await, ttl, placement())
        .await
        .unwrap();
    let stop_a = CancellationToken::new();
    let stop_b = CancellationToken::new();
    let ea = a.spawn_elector("scaler", "A", stop_a.clone());
    let eb = b.spawn_elector("scaler", "B", stop_b.clone());
    eventually("a leader", Duration::from_secs(5), async || {
        ea.leadership() != Leadership::Follower || eb.leadership() != Leadership::Follower
    })
    .await;
    // Over a few renew periods, never two leaders at once (a stalled machine may show none for
    // a moment while the lease moves; that is allowed, two are not).
    let until = Instant::now() + ttl * 2;
    while Instant::now() < until {
        let leaders = [ea.leadership(), eb.leadership()]
            .iter()
            .filter(|l| l.token().is_some())
            .count();
        assert!(leaders <= 1, "two leaders");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("a leader again", Duration::from_secs(5), async || {
        ea.leadership().token().is_some() || eb.leadership().token().is_some()
    })
    .await;
    let (leader_stop, leader, follower) = if ea.leadership().token().is_some() {
        (stop_a.clone(), ea, eb)
    } else {
        (stop_b.clone(), eb, ea)
    };
    let t = Instant::now();
    leader_stop.cancel();
    leader.join().await;
    eventually(
        "handover after a release",
        Duration::from_secs(5),
        async || follower.leadership().token().is_some(),
    )
    .await;
    println!(
        "MEASURE lease handover on graceful stop (ttl {ttl:?}): {:?}",
        t.elapsed()
    );
    stop_a.cancel();
    stop_b.cancel();
    follower.join().await;
}

/// Holds a fixed set of executions and answers only for those.
struct Holder {
    name: &'static str,
    holds: Vec<&'static str>,
    seen: Arc<Mutex<HashMap<String, String>>>,
}

impl CompletionHandler for Holder {
    fn handle(&self, request: CompletionRequest) -> BoxFuture<'static, Option<Bytes>> {
        let holds = self.holds.contains(&request.execution_id.as_str());
        if holds {
            self.seen.lock().unwrap().insert(
                request.execution_id.clone(),
                String::from_utf8_lossy(&request.body).into_owned(),
            );
        }
        let name = self.name;
        Box::pin(async move { holds.then(|| Bytes::from(format!("applied by {name}"))) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_reach_only_the_holder_and_done_wakes_a_waiter() {
    let server = NatsServer::start().await;
    let stop = CancellationToken::new();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let mut replicas = Vec::new();
    for (name, holds) in [("A", vec!["ex-a"]), ("B", vec![]), ("C", vec!["ex-c"])] {
        let conn = connect(&server).await;
        let route = CompletionRoute::new(&conn);
        route
            .serve(
                Arc::new(Holder {
                    name,
                    holds,
                    seen: seen.clone(),
                }),
                stop.clone(),
            )
            .await
            .unwrap();
        replicas.push((conn, route));
    }
    // The callback lands on B, which holds nothing: A answers for ex-a, C for ex-c. (Generous
    // bounds: the suite shares 2 cores with other load; only a failure waits them out.)
    let b = &replicas[1].1;
    let t = Instant::now();
    let outcome = b
        .request(
            "ex-a",
            Bytes::from_static(b"{\"ok\":1}"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    println!("MEASURE routed callback round trip: {:?}", t.elapsed());
    assert_eq!(
        outcome,
        RouteOutcome::Applied(Bytes::from_static(b"applied by A"))
    );
    assert_eq!(
        b.request("ex-c", Bytes::new(), Duration::from_secs(10))
            .await
            .unwrap(),
        RouteOutcome::Applied(Bytes::from_static(b"applied by C"))
    );
    assert_eq!(seen.lock().unwrap()["ex-a"], "{\"ok\":1}");
    // Nobody holds it: unknown after the timeout.
    let t = Instant::now();
    assert_eq!(
        b.request("ex-none", Bytes::new(), Duration::from_millis(300))
            .await
            .unwrap(),
        RouteOutcome::Unknown
    );
    assert!(t.elapsed() >= Duration::from_millis(250));

    // "Finished" notifications: a waiter subscribed on A wakes on C's publish.
    let done_a = DoneNotifier::new(&replicas[0].0);
    let done_c = DoneNotifier::new(&replicas[2].0);
    let mut all = done_a.subscribe_all().await.unwrap();
    let waiter = done_a.subscribe("ex.odd_id").await.unwrap();
    done_c
        .publish("ex.odd_id", Bytes::from_static(b"SUCCESS"))
        .await
        .unwrap();
    assert_eq!(
        waiter.wait(Duration::from_secs(5)).await,
        Some(Bytes::from_static(b"SUCCESS"))
    );
    assert_eq!(
        all.next().await,
        Some(("ex.odd_id".to_owned(), Bytes::from_static(b"SUCCESS")))
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_state_follows_the_broker_and_start_up_is_bounded() {
    // No server on this port: start-up gives up after its bound with a clear error.
    let unused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut settings = NatsSettings::new(&format!("nats://127.0.0.1:{unused}"));
    settings.connect_timeout = Duration::from_millis(500);
    let t = Instant::now();
    let err = NatsConnection::connect(&settings).await.unwrap_err();
    assert!(matches!(err, ConnectError::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{unused}")),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));

    let mut bad = NatsSettings::new("nats://127.0.0.1:1");
    bad.prefix = "a.b".to_owned();
    assert!(matches!(
        NatsConnection::connect(&bad).await,
        Err(ConnectError::Prefix(_))
    ));

    let mut server = NatsServer::start().await;
    let conn = connect(&server).await;
    let mut reporter = conn.reporter();
    assert_eq!(reporter.state(), ConnectionState::Connected);
    assert_eq!((reporter.reconnects(), reporter.disconnects()), (0, 0));
    server.kill();
    eventually(
        "DOWN after the broker died",
        Duration::from_secs(10),
        async || reporter.state() == ConnectionState::Disconnected,
    )
    .await;
    // While down, a publish is refused at once instead of waiting for a timeout.
    let queue = InvocationQueue::new(&conn, placement());
    let t = Instant::now();
    assert!(matches!(
        queue.publish("f", "e", Bytes::new()).await,
        Err(PublishError::Unavailable(_))
    ));
    assert!(t.elapsed() < Duration::from_millis(100));
    server.restart().await;
    let t = Instant::now();
    assert!(reporter.wait_connected(Duration::from_secs(15)).await);
    println!(
        "MEASURE client reconnect after the broker is back: {:?}",
        t.elapsed()
    );
    assert_eq!(reporter.reconnects(), 1);
    assert!(reporter.disconnects() >= 1);
}
