//! The async load client of the state-backend benchmark (`bench/state_backends.py`,
//! docs/perf/RESULTS.md, "State backends: memory vs nats").
//!
//! Enqueues up to `--count` executions of one function (`POST /v1/functions/{name}:enqueue`)
//! from `--clients` concurrent keep-alive connections, either as fast as they go (burst) or on a
//! fixed schedule of `--rate` per second (paced), for at most `--cap-s` seconds. For every 202
//! it keeps the execution id and the wall-clock instant the request was sent. Then it waits
//! until the control plane counts every accepted execution finished (`function_success_total`
//! plus `function_error_total` of the function on `/actuator/prometheus`, polled every 50 ms so
//! the drain is not disturbed; bounded by `--drain-cap-s`), and reads every record with
//! `GET /v1/executions/{id}`.
//!
//! Completion instant of an execution: the record's `finishedAt`, which the control plane stamps
//! (from the same system clock) when it decides the terminal state, on either backend. With
//! `--nats URL --prefix P` the client also reads each record's entry in the `P_executions` KV
//! bucket and keeps the time JetStream stored its last write: the terminal record as every
//! replica sees it.
//!
//! Output: one JSON summary line on stdout (and in `--out`), and with `--rows` one line per
//! accepted execution (id, sent, 202 received, startedAt, finishedAt, KV stored; Unix ns).
//!
//! Usage: `bench_async --api http://127.0.0.1:18080 --mgmt http://127.0.0.1:18081 --function f
//! --count 20000 --clients 8 --cap-s 60 [--rate 200] [--drain-cap-s 120] [--nats URL --prefix P]
//! [--out FILE] [--rows FILE]`

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::time::Instant;

struct Args {
    api: String,
    mgmt: String,
    function: String,
    count: usize,
    clients: usize,
    cap: Duration,
    rate: Option<f64>,
    drain_cap: Duration,
    nats: Option<(String, String)>,
    out: Option<String>,
    rows: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut map: HashMap<String, String> = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let Some(name) = k.strip_prefix("--") else {
            bail!("unexpected argument {k}");
        };
        let v = it
            .next()
            .with_context(|| format!("--{name} needs a value"))?;
        map.insert(name.to_owned(), v);
    }
    let get = |k: &str| map.get(k).cloned();
    let need = |k: &str| get(k).with_context(|| format!("--{k} is required"));
    let secs = |k: &str, default: f64| -> anyhow::Result<Duration> {
        Ok(Duration::from_secs_f64(match get(k) {
            Some(v) => v.parse()?,
            None => default,
        }))
    };
    let nats = match (get("nats"), get("prefix")) {
        (Some(url), Some(prefix)) => Some((url, prefix)),
        (Some(url), None) => Some((url, "nanofaas".to_owned())),
        _ => None,
    };
    Ok(Args {
        api: need("api")?,
        mgmt: need("mgmt")?,
        function: need("function")?,
        count: need("count")?.parse()?,
        clients: get("clients").map_or(Ok(8), |v| v.parse())?.max(1),
        cap: secs("cap-s", 60.0)?,
        rate: get("rate").map(|v| v.parse()).transpose()?,
        drain_cap: secs("drain-cap-s", 120.0)?,
        nats,
        out: get("out"),
        rows: get("rows"),
    })
}

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// One accepted execution.
struct Row {
    id: String,
    sent: i64,
    replied: i64,
    started: Option<i64>,
    finished: Option<i64>,
    kv_stored: Option<i64>,
    status: String,
}

#[derive(Default)]
struct Refusals {
    by_status: HashMap<u16, usize>,
    transport: usize,
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.clients)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{}/v1/functions/{}:enqueue", args.api, args.function);
    let body = br#"{"input":{"message":"hi"}}"#.as_slice();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let start_ns = unix_ns();

    // 1. Enqueue.
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        let (count, cap, rate) = (args.count, args.cap, args.rate);
        clients.push(tokio::spawn(async move {
            let mut rows = Vec::new();
            let mut refused = Refusals::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || start.elapsed() >= cap {
                    break;
                }
                if let Some(rate) = rate {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate))
                        .await;
                }
                let sent = unix_ns();
                let reply = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let reply = match reply {
                    Ok(r) => r,
                    Err(_) => {
                        refused.transport += 1;
                        continue;
                    }
                };
                let status = reply.status().as_u16();
                let text = reply.bytes().await.unwrap_or_default();
                let replied = unix_ns();
                if status != 202 {
                    *refused.by_status.entry(status).or_default() += 1;
                    continue;
                }
                let id = serde_json::from_slice::<Value>(&text)
                    .ok()
                    .and_then(|v| v["executionId"].as_str().map(str::to_owned));
                match id {
                    Some(id) => rows.push(Row {
                        id,
                        sent,
                        replied,
                        started: None,
                        finished: None,
                        kv_stored: None,
                        status: String::new(),
                    }),
                    None => refused.transport += 1,
                }
            }
            (rows, refused)
        }));
    }
    let mut rows = Vec::new();
    let mut refused = Refusals::default();
    for c in clients {
        let (r, f) = c.await?;
        rows.extend(r);
        for (k, v) in f.by_status {
            *refused.by_status.entry(k).or_default() += v;
        }
        refused.transport += f.transport;
    }
    let enqueue_wall = start.elapsed();
    rows.sort_by_key(|r| r.sent);
    let accepted = rows.len();

    // 2. Wait until the control plane counts them all finished.
    let metrics_url = format!("{}/actuator/prometheus", args.mgmt);
    let before = finished_count(&client, &metrics_url, &args.function).await;
    let drain_deadline = Instant::now() + args.drain_cap;
    let mut drained = false;
    while Instant::now() < drain_deadline {
        if finished_count(&client, &metrics_url, &args.function).await >= accepted as f64 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_wall = start.elapsed();
    // A pause between the drain and the reads below, so that a CPU reading of the control plane
    // taken right after the drain (bench/state_backends.py samples every 20 ms) counts no reads.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 3. Read every record (a few at a time; the load is over).
    read_records(&client, &args, &mut rows).await;
    if let Some((nats_url, prefix)) = &args.nats {
        read_kv_times(nats_url, prefix, &mut rows).await?;
    }

    let summary = summarize(&args, &rows, &refused, start_ns, enqueue_wall, drain_wall);
    let mut summary = summary;
    summary["drained_by_metrics"] = json!(drained);
    summary["finished_count_before_wait"] = json!(before);
    let line = summary.to_string();
    println!("{line}");
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{line}\n"))?;
    }
    if let Some(path) = &args.rows {
        let mut text = String::from(
            "id\tsent_ns\treplied_ns\tstarted_ns\tfinished_ns\tkv_stored_ns\tstatus\n",
        );
        let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        for r in &rows {
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                r.id,
                r.sent,
                r.replied,
                opt(r.started),
                opt(r.finished),
                opt(r.kv_stored),
                r.status
            ));
        }
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// `function_success_total` + `function_error_total` of `function` (0 when unreadable).
async fn finished_count(client: &reqwest::Client, url: &str, function: &str) -> f64 {
    let Ok(reply) = client.get(url).send().await else {
        return 0.0;
    };
    let Ok(text) = reply.text().await else {
        return 0.0;
    };
    let label = format!("function=\"{function}\"");
    text.lines()
        .filter(|l| {
            (l.starts_with("function_success_total{") || l.starts_with("function_error_total{"))
                && l.contains(&label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn parse_instant(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()?
        .timestamp_nanos_opt()
}

async fn read_records(client: &reqwest::Client, args: &Args, rows: &mut [Row]) {
    const READERS: usize = 4;
    let chunk = rows.len().div_ceil(READERS).max(1);
    let mut readers = Vec::new();
    for part in rows.chunks(chunk) {
        let ids: Vec<String> = part.iter().map(|r| r.id.clone()).collect();
        let (client, api) = (client.clone(), args.api.clone());
        readers.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let record = async {
                    let reply = client
                        .get(format!("{api}/v1/executions/{id}"))
                        .send()
                        .await
                        .ok()?;
                    serde_json::from_slice::<Value>(&reply.bytes().await.ok()?).ok()
                }
                .await;
                out.push(record.map(|v| {
                    (
                        parse_instant(&v["startedAt"]),
                        parse_instant(&v["finishedAt"]),
                        v["status"].as_str().unwrap_or("?").to_owned(),
                    )
                }));
            }
            out
        }));
    }
    let mut i = 0;
    for reader in readers {
        let Ok(records) = reader.await else {
            continue;
        };
        for record in records {
            let row = &mut rows[i];
            match record {
                Some((started, finished, status)) => {
                    row.started = started;
                    row.finished = finished;
                    row.status = status;
                }
                None => row.status = "unreadable".to_owned(),
            }
            i += 1;
        }
    }
}

/// The time JetStream stored each record's last write (the terminal one once it finished).
async fn read_kv_times(url: &str, prefix: &str, rows: &mut [Row]) -> anyhow::Result<()> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value(format!("{prefix}_executions")).await?;
    for row in rows.iter_mut() {
        // Execution ids are UUIDs: their KV key is the id itself (letters, digits, '-').
        if let Ok(Some(entry)) = kv.entry(row.id.as_str()).await {
            row.kv_stored = i64::try_from(entry.created.unix_timestamp_nanos()).ok();
        }
    }
    Ok(())
}

/// Nearest-rank percentiles (µs) of `values` (ns).
fn percentiles(mut values: Vec<i64>) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    values.sort_unstable();
    let at = |p: f64| {
        let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
        values[rank.clamp(1, values.len()) - 1] as f64 / 1e3
    };
    json!({
        "n": values.len(),
        "p50_us": at(50.0),
        "p90_us": at(90.0),
        "p99_us": at(99.0),
        "max_us": at(100.0),
    })
}

fn summarize(
    args: &Args,
    rows: &[Row],
    refused: &Refusals,
    start_ns: i64,
    enqueue_wall: Duration,
    drain_wall: Duration,
) -> Value {
    let accepted = rows.len();
    let first_sent = rows.iter().map(|r| r.sent).min().unwrap_or(start_ns);
    let last_replied = rows.iter().map(|r| r.replied).max().unwrap_or(start_ns);
    let last_finished = rows.iter().filter_map(|r| r.finished).max();
    let enqueue_s = (last_replied - first_sent) as f64 / 1e9;
    let complete_s = last_finished.map(|f| (f - first_sent) as f64 / 1e9);
    let mut statuses: HashMap<&str, usize> = HashMap::new();
    for r in rows {
        *statuses.entry(r.status.as_str()).or_default() += 1;
    }
    let diffs = |f: &dyn Fn(&Row) -> Option<i64>| rows.iter().filter_map(f).collect::<Vec<_>>();
    json!({
        "function": args.function,
        "mode": if args.rate.is_some() { "paced" } else { "burst" },
        "rate": args.rate,
        "clients": args.clients,
        "count": args.count,
        "accepted": accepted,
        "refused_by_status": refused.by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<HashMap<_, _>>(),
        "transport_errors": refused.transport,
        "statuses": statuses,
        "enqueue_wall_s": enqueue_wall.as_secs_f64(),
        "drain_wall_s": drain_wall.as_secs_f64(),
        "enqueue_s": enqueue_s,
        "enqueue_per_s": accepted as f64 / enqueue_s.max(1e-9),
        "complete_s": complete_s,
        "complete_per_s": complete_s.map(|s| accepted as f64 / s.max(1e-9)),
        "first_sent_ns": first_sent,
        "last_finished_ns": last_finished,
        "enqueue_reply": percentiles(diffs(&|r| Some(r.replied - r.sent))),
        "to_start": percentiles(diffs(&|r| Some(r.started? - r.sent))),
        "to_finish": percentiles(diffs(&|r| Some(r.finished? - r.sent))),
        "run": percentiles(diffs(&|r| Some(r.finished? - r.started?))),
        "to_kv_stored": percentiles(diffs(&|r| Some(r.kv_stored? - r.sent))),
        "kv_after_finish": percentiles(diffs(&|r| Some(r.kv_stored? - r.finished?))),
    })
}
