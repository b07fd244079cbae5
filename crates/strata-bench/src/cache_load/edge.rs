//! `strata cache-load edge`: a trace replayed through the CDN edge's own memory store
//! (`strata_edge::store`), once with the TinyLFU admission the edge runs and once with plain
//! LRU, at the same memory — the hit ratio each earns on the same stream of requests — next to
//! the ideal caches of [`super::sim`] holding as many objects as fit in that memory (Belady's
//! MIN: the best any cache could do; perfect LFU; an exact LRU, which moka's LRU should match).
//!
//! Each request asks the store for `/o/<rank>`; a miss stores an object of `--object-bytes`
//! as an origin's `200` with `max-age=3600` would be stored. Every 32 requests the store is
//! let apply the reads and writes moka queues ([`Store::settle`]): a live edge's traffic keeps
//! it caught up, while a tight loop would let reads go uncounted by the admission policy.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use clap::Args;
use http::HeaderMap;
use serde_json::json;
use strata_edge::store::{Eviction, Store, StoreConfig, plain_object};

use super::TraceArgs;
use super::sim;
use super::trace::Trace;

#[derive(Debug, Args)]
pub(super) struct EdgeArgs {
    #[command(flatten)]
    trace: TraceArgs,
    /// Objects the trace draws from (ranks 0 … objects − 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50_000_000))]
    objects: u32,
    /// Requests replayed first to fill the store, not counted.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Requests counted, after the warm-up.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    requests: u64,
    /// The memory store, MiB.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    memory_mib: u64,
    /// Each object's body, bytes.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=8_388_608))]
    object_bytes: u64,
}

/// Hits of one eviction policy over the counted requests.
async fn replay(
    trace: &[u32],
    warmup: u64,
    config: &StoreConfig,
    eviction: Eviction,
    body: &Bytes,
) -> anyhow::Result<u64> {
    let store = Store::open_with(config, Arc::default(), eviction).await?;
    let none = HeaderMap::new();
    let started = Instant::now();
    let mut hits = 0;
    let step = (trace.len() / 10).max(1);
    for (j, rank) in trace.iter().enumerate() {
        let url = format!("/o/{rank}");
        if store.lookup(&url, &none).await.is_some() {
            hits += u64::from(j as u64 >= warmup);
        } else if let Some(object) = plain_object(&url, body.clone()) {
            store.insert(object).await;
        }
        if j % 32 == 31 {
            store.settle().await;
        }
        if j % step == step - 1 {
            eprintln!(
                "    {eviction:?}: {}% of {} requests, {:.1} s",
                (j + 1) * 100 / trace.len(),
                trace.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(hits)
}

pub(super) async fn run(a: EdgeArgs) -> anyhow::Result<()> {
    let memory_bytes = a.memory_mib * 1024 * 1024;
    let body = Bytes::from(vec![b'x'; usize::try_from(a.object_bytes)?]);
    let weight = plain_object("/o/0", body.clone())
        .map(|o| o.weight())
        .unwrap_or(a.object_bytes)
        .max(1);
    let config = StoreConfig {
        memory_bytes,
        disk: None,
        max_object: (memory_bytes / 2).min(8 * 1024 * 1024),
    };
    anyhow::ensure!(
        weight <= config.max_object,
        "--object-bytes {} does not fit a store of --memory-mib {} (objects of at most half \
         the memory are stored): raise --memory-mib or lower --object-bytes",
        a.object_bytes,
        a.memory_mib
    );
    let workload = a.trace.workload(a.objects);
    let end = a.warmup + a.requests;
    let started = Instant::now();
    let trace = Trace::take(workload, end);
    eprintln!(
        "    drew {end} requests in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let capacity = usize::try_from(memory_bytes / weight)?;
    let positions: Vec<u64> = (0..end).collect();
    let ideal = sim::replay(&trace, &positions, a.objects, capacity, &[(a.warmup, end)]);
    let mut policies = serde_json::Map::new();
    for eviction in [Eviction::TinyLfu, Eviction::Lru] {
        let hits = replay(&trace, a.warmup, &config, eviction, &body).await?;
        policies.insert(
            format!("{eviction:?}").to_lowercase(),
            json!({"hits": hits, "hit_ratio": hits as f64 / a.requests as f64}),
        );
    }
    let out = json!({
        "workload": workload,
        "objects": a.objects,
        "warmup": a.warmup,
        "requests": a.requests,
        "memory_bytes": memory_bytes,
        "object_bytes": a.object_bytes,
        "object_weight": weight,
        "capacity_objects": capacity,
        "edge_store": policies,
        "ideal": ideal.first(),
    });
    println!("{out}");
    Ok(())
}
