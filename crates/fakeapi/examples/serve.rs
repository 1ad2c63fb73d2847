//! Serves the objects of a Kubernetes `List` manifest (the benchmark's generated cluster,
//! `bench/gen.py`) from the fake API server on 127.0.0.1 until killed, so CoreDNS can read the
//! same cluster from an API server that Sextant reads from the manifest (`bench/`, with
//! `COREDNS_BIN`). Prints the server's URL on its first line of output.

use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: serve MANIFEST.json")?;
    let text = std::fs::read_to_string(&path)?;
    let list: serde_json::Value = serde_json::from_str(&text)?;
    let items = list
        .get("items")
        .and_then(|i| i.as_array())
        .cloned()
        .ok_or("the manifest is not a List with items")?;
    let api = sextant_fakeapi::FakeApi::start().await?;
    api.apply_many(items)?;
    println!("{}", api.url());
    std::io::stdout().flush()?;
    std::future::pending::<()>().await;
    Ok(())
}
