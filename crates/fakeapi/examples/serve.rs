//! Serves the objects of a Kubernetes `List` manifest (the benchmark's generated cluster,
//! `bench/gen.py`) from the fake API server on 127.0.0.1 until killed, so CoreDNS can read the
//! same cluster from an API server that Sextant reads from the manifest, and so both can be
//! measured at cluster scale (`bench/`). Prints the server's URL on its first line of output,
//! then takes commands on standard input, one per line, answering each with a line:
//!
//! - `compact`: moves the resourceVersion on (a namespace label changes, unseen by watches),
//!   forgets the event history and ends every watch, so each client's next watch gets 410
//!   Expired and lists everything again (what an API server restart with compaction does);
//! - `churn RATE SECONDS`: changes RATE EndpointSlices a second for SECONDS (the first endpoint's
//!   readiness flips, the `endpoints.kubernetes.io/last-change-trigger-time` annotation set to
//!   the moment of the change), then answers `ok N`.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

const TRIGGER: &str = "endpoints.kubernetes.io/last-change-trigger-time";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: serve MANIFEST.json")?;
    let text = std::fs::read_to_string(&path)?;
    let list: Value = serde_json::from_str(&text)?;
    let items = list
        .get("items")
        .and_then(|i| i.as_array())
        .cloned()
        .ok_or("the manifest is not a List with items")?;
    let mut slices: Vec<Value> = items
        .iter()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some("EndpointSlice"))
        .filter(|o| o["endpoints"].as_array().is_some_and(|e| !e.is_empty()))
        .cloned()
        .collect();
    let first_ns = items
        .iter()
        .find(|o| o.get("kind").and_then(Value::as_str) == Some("Namespace"))
        .cloned()
        .ok_or("the manifest has no Namespace")?;
    let mut compactions = 0u64;
    let api = sextant_fakeapi::FakeApi::start().await?;
    api.apply_many(items)?;
    println!("{}", api.url());
    std::io::stdout().flush()?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut next = 0usize;
    while let Some(line) = rx.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["compact"] => {
                // A change no watch sees moves the resourceVersion past every client's, so the
                // compaction expires them all.
                api.skip_events(true);
                compactions += 1;
                let mut ns = first_ns.clone();
                ns["metadata"]["labels"]["bench.sextant.dev/compactions"] =
                    Value::String(compactions.to_string());
                let changed = api.apply(ns).is_ok();
                api.skip_events(false);
                api.compact();
                api.drop_watches();
                if changed {
                    "ok".to_string()
                } else {
                    "error: no namespace to change".to_string()
                }
            }
            ["churn", rate, secs] => {
                let (Ok(rate), Ok(secs)) = (rate.parse::<u32>(), secs.parse::<u64>()) else {
                    println!("error: churn RATE SECONDS");
                    continue;
                };
                let every = Duration::from_secs(1) / rate.max(1);
                let end = Instant::now() + Duration::from_secs(secs);
                let mut tick = tokio::time::interval(every);
                let mut n = 0;
                while Instant::now() < end && !slices.is_empty() {
                    tick.tick().await;
                    let i = next % slices.len();
                    next += 1;
                    let s = &mut slices[i];
                    let ready = &mut s["endpoints"][0]["conditions"]["ready"];
                    *ready = Value::Bool(!ready.as_bool().unwrap_or(true));
                    let now =
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                    s["metadata"]["annotations"][TRIGGER] = Value::String(now);
                    if api.apply(s.clone()).is_ok() {
                        n += 1;
                    }
                }
                format!("ok {n}")
            }
            _ => format!("error: unknown command {line:?}"),
        };
        println!("{answer}");
        std::io::stdout().flush()?;
    }
    Ok(())
}
