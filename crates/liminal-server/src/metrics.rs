//! Prometheus metrics for `GET /metrics`.
//!
//! The values live in the broker as atomics (connection, channel,
//! slow-consumer and store counters) or in the supervision tree (restart
//! counts). They are read at scrape time into metric families, so the
//! broker's hot path never touches a Prometheus type, and encoded with the
//! `prometheus` crate's text encoder.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use liminal_broker::{BrokerHandle, TreeNode};
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

/// Errors from rendering the metrics page.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("the broker did not answer: {0}")]
    Broker(#[from] liminal_broker::BrokerError),
    #[error("failed to encode metrics: {0}")]
    Encode(#[from] prometheus::Error),
}

/// Reads every counter and renders the Prometheus text format (content
/// type [`prometheus::TEXT_FORMAT`]).
pub async fn render(broker: &BrokerHandle) -> Result<String, MetricsError> {
    let families = broker_families(broker).await?;
    let mut output = Vec::new();
    TextEncoder::new().encode(&families, &mut output)?;
    Ok(String::from_utf8(output).expect("the text encoder writes UTF-8"))
}

/// Families read from the broker's counters and supervision tree.
async fn broker_families(broker: &BrokerHandle) -> Result<Vec<MetricFamily>, MetricsError> {
    // The tree comes first: its request queues behind connections the
    // supervisors are still starting, so the counters read afterwards
    // include every connection a client has already seen accepted.
    let tree = broker.tree().await?;
    let mut families = Vec::new();
    connection_families(broker, &mut families);
    channel_families(broker, &mut families).await?;
    families.push(family(
        "liminal_supervisor_restarts_total",
        "Child restarts performed by each supervisor since the server started.",
        MetricType::COUNTER,
        supervisor_restarts(&tree)
            .into_iter()
            .map(|(path, restarts)| {
                sample(
                    &[("supervisor", &path)],
                    restarts as f64,
                    MetricType::COUNTER,
                )
            })
            .collect(),
    ));
    families.push(single(
        "liminal_conversations_active",
        "Open conversations.",
        MetricType::GAUGE,
        count_kind(&tree, "conversation") as f64,
    ));
    conversation_families(broker.conversation_stats(), &mut families);
    if let Some(stats) = broker.store_stats() {
        store_families(&stats, &mut families);
    }
    if let Some(latency) = broker.store_write_latency() {
        families.push(write_latency_family(latency));
    }
    Ok(families)
}

fn conversation_families(stats: &liminal_broker::conversations::ConversationStats, families: &mut Vec<MetricFamily>) {
    families.push(single(
        "liminal_conversations_opened_total",
        "Conversations opened since the server started.",
        MetricType::COUNTER,
        stats.opened.load(Ordering::Relaxed) as f64,
    ));
    let ended = [("closed", &stats.closed), ("failed", &stats.failed)]
        .into_iter()
        .map(|(outcome, count)| {
            sample(
                &[("outcome", outcome)],
                count.load(Ordering::Relaxed) as f64,
                MetricType::COUNTER,
            )
        })
        .collect();
    families.push(family(
        "liminal_conversations_ended_total",
        "Conversations ended since the server started, by outcome: closed or failed.",
        MetricType::COUNTER,
        ended,
    ));
    families.push(single(
        "liminal_conversation_participant_crashes_total",
        "Participant crashes since the server started, including those a restart policy recovered from.",
        MetricType::COUNTER,
        stats.participant_crashes.load(Ordering::Relaxed) as f64,
    ));
}

/// Nodes of `kind` in the tree.
fn count_kind(node: &TreeNode, kind: &str) -> usize {
    let own = usize::from(node.kind == kind);
    own + node
        .children
        .iter()
        .map(|child| count_kind(child, kind))
        .sum::<usize>()
}

/// The store's batch write latency as a Prometheus histogram.
fn write_latency_family(latency: &liminal_broker::store::WriteLatency) -> MetricFamily {
    let mut histogram = Histogram::default();
    histogram.set_sample_count(latency.count.load(Ordering::Relaxed));
    histogram.set_sample_sum(latency.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9);
    let buckets = latency
        .buckets
        .iter()
        .zip(liminal_broker::store::WRITE_LATENCY_BUCKETS)
        .map(|(count, bound)| {
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(bound);
            bucket.set_cumulative_count(count.load(Ordering::Relaxed));
            bucket
        })
        .collect();
    histogram.set_bucket(buckets);
    let mut metric = Metric::default();
    metric.set_histogram(histogram);
    let mut family = MetricFamily::default();
    family.set_name("liminal_store_write_seconds".to_owned());
    family.set_help("Time spent writing a batch to RocksDB, including the WAL sync when fsync is always.".to_owned());
    family.set_field_type(MetricType::HISTOGRAM);
    family.set_metric(vec![metric]);
    family
}

fn store_families(stats: &liminal_store::StoreStats, families: &mut Vec<MetricFamily>) {
    let counters: [(&str, &str, u64); 6] = [
        (
            "liminal_store_batches_total",
            "Write batches passed to RocksDB, failed ones included.",
            stats.batches,
        ),
        (
            "liminal_store_commands_total",
            "Store commands applied, rejected ones included.",
            stats.commands,
        ),
        (
            "liminal_store_write_errors_total",
            "Batch writes that RocksDB failed.",
            stats.write_errors,
        ),
        (
            "liminal_store_fsyncs_total",
            "Write-ahead log syncs.",
            stats.fsyncs,
        ),
        (
            "liminal_store_fsync_errors_total",
            "Failed write-ahead log syncs.",
            stats.fsync_errors,
        ),
        (
            "liminal_store_written_bytes_total",
            "Encoded bytes of the write batches.",
            stats.bytes_written,
        ),
    ];
    for (name, help, value) in counters {
        families.push(single(name, help, MetricType::COUNTER, value as f64));
    }
}

fn connection_families(broker: &BrokerHandle, families: &mut Vec<MetricFamily>) {
    let stats = broker.connection_stats();
    let read = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed) as f64;
    families.push(single(
        "liminal_connections_open",
        "Client connections currently open.",
        MetricType::GAUGE,
        read(&stats.open),
    ));
    families.push(single(
        "liminal_connections_accepted_total",
        "Client connections accepted.",
        MetricType::COUNTER,
        read(&stats.accepted),
    ));
    families.push(single(
        "liminal_connections_rejected_total",
        "Client connections turned away at the connection limit or while draining.",
        MetricType::COUNTER,
        read(&stats.rejected),
    ));
    families.push(single(
        "liminal_connections_crashed_total",
        "Connection actors that crashed.",
        MetricType::COUNTER,
        read(&stats.crashed),
    ));
    // The outbox of a connection mixes deliveries of all its subscriptions,
    // so drops are counted per server, not per channel.
    families.push(single(
        "liminal_slow_consumer_dropped_messages_total",
        "Deliveries discarded because a subscriber read too slowly (policy drop).",
        MetricType::COUNTER,
        read(&stats.outboxes.dropped_messages),
    ));
    families.push(single(
        "liminal_slow_consumer_disconnects_total",
        "Connections closed because they read too slowly (policy disconnect, or replies piling up).",
        MetricType::COUNTER,
        read(&stats.outboxes.slow_consumer_disconnects),
    ));
}

async fn channel_families(
    broker: &BrokerHandle,
    families: &mut Vec<MetricFamily>,
) -> Result<(), MetricsError> {
    let mut channels = broker.channels().await?;
    channels.sort_by(|left, right| left.config.name.cmp(&right.config.name));
    families.push(single(
        "liminal_channels",
        "Channels, declared and automatically created.",
        MetricType::GAUGE,
        channels.len() as f64,
    ));
    let total_subscriptions: u64 = channels
        .iter()
        .map(|channel| channel.stats.subscriptions.load(Ordering::Relaxed))
        .sum();
    families.push(single(
        "liminal_subscriptions",
        "Active subscriptions over all channels.",
        MetricType::GAUGE,
        total_subscriptions as f64,
    ));

    let per_channel: [(
        &str,
        &str,
        MetricType,
        fn(&liminal_broker::channels::channel::ChannelStats) -> u64,
    ); 6] = [
        (
            "liminal_channel_published_messages_total",
            "Messages published to the channel.",
            MetricType::COUNTER,
            |stats| stats.published_messages.load(Ordering::Relaxed),
        ),
        (
            "liminal_channel_published_bytes_total",
            "Payload bytes published to the channel.",
            MetricType::COUNTER,
            |stats| stats.published_bytes.load(Ordering::Relaxed),
        ),
        (
            "liminal_channel_delivered_messages_total",
            "Deliveries queued for subscribers (one per message and subscriber), including ones a slow subscriber later lost.",
            MetricType::COUNTER,
            |stats| stats.delivered_messages.load(Ordering::Relaxed),
        ),
        (
            "liminal_channel_delivered_bytes_total",
            "Payload bytes of the deliveries in liminal_channel_delivered_messages_total.",
            MetricType::COUNTER,
            |stats| stats.delivered_bytes.load(Ordering::Relaxed),
        ),
        (
            "liminal_channel_dedup_hits_total",
            "Publishes answered as duplicates of an earlier publish with the same idempotency key.",
            MetricType::COUNTER,
            |stats| stats.dedup_hits.load(Ordering::Relaxed),
        ),
        (
            "liminal_channel_subscriptions",
            "Active subscriptions of the channel.",
            MetricType::GAUGE,
            |stats| stats.subscriptions.load(Ordering::Relaxed),
        ),
    ];
    // The text encoder rejects a family without samples, so per-channel
    // families are left out until the first channel exists.
    if channels.is_empty() {
        return Ok(());
    }
    for (name, help, kind, read) in per_channel {
        let samples = channels
            .iter()
            .map(|channel| {
                sample(
                    &[("channel", &channel.config.name)],
                    read(&channel.stats) as f64,
                    kind,
                )
            })
            .collect();
        families.push(family(name, help, kind, samples));
    }
    Ok(())
}

/// Sums the restart counts of each supervisor's children, keyed by the
/// supervisor's path. Supervisors without restarts are listed with 0.
fn supervisor_restarts(tree: &TreeNode) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    collect_restarts(tree, &mut totals);
    totals
}

fn collect_restarts(node: &TreeNode, totals: &mut BTreeMap<String, u64>) {
    if node.kind == "supervisor" {
        let restarts: u64 = node.children.iter().map(|child| child.restarts).sum();
        *totals.entry(node.path.clone()).or_insert(0) += restarts;
    }
    for child in &node.children {
        collect_restarts(child, totals);
    }
}

fn family(name: &str, help: &str, kind: MetricType, samples: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(samples);
    family
}

/// A family with one unlabelled sample.
fn single(name: &str, help: &str, kind: MetricType, value: f64) -> MetricFamily {
    family(name, help, kind, vec![sample(&[], value, kind)])
}

fn sample(labels: &[(&str, &str)], value: f64, kind: MetricType) -> Metric {
    let pairs = labels
        .iter()
        .map(|(name, label_value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*label_value).to_owned());
            pair
        })
        .collect();
    let mut metric = Metric::from_label(pairs);
    match kind {
        MetricType::COUNTER => {
            let mut counter = Counter::default();
            counter.set_value(value);
            metric.set_counter(counter);
        }
        _ => {
            let mut gauge = Gauge::default();
            gauge.set_value(value);
            metric.set_gauge(gauge);
        }
    }
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &str, kind: &'static str, restarts: u64, children: Vec<TreeNode>) -> TreeNode {
        TreeNode {
            path: path.to_owned(),
            kind,
            state: "running",
            restarts,
            children,
        }
    }

    #[test]
    fn restarts_summed_per_supervisor() {
        let tree = node(
            "broker",
            "supervisor",
            0,
            vec![
                node(
                    "broker/channels",
                    "supervisor",
                    0,
                    vec![
                        node("broker/channels/a", "channel", 2, vec![]),
                        node("broker/channels/b", "channel", 1, vec![]),
                    ],
                ),
                node("broker/connections", "supervisor", 0, vec![]),
            ],
        );
        let totals = supervisor_restarts(&tree);
        assert_eq!(totals["broker/channels"], 3);
        assert_eq!(totals["broker/connections"], 0);
        assert_eq!(totals["broker"], 0);
        assert_eq!(count_kind(&tree, "channel"), 2);
        assert_eq!(count_kind(&tree, "conversation"), 0);
    }

    #[test]
    fn families_encode_as_prometheus_text() {
        let families = vec![
            single(
                "liminal_connections_open",
                "Open connections.",
                MetricType::GAUGE,
                3.0,
            ),
            family(
                "liminal_channel_published_messages_total",
                "Published.",
                MetricType::COUNTER,
                vec![sample(&[("channel", "orders")], 42.0, MetricType::COUNTER)],
            ),
        ];
        let mut output = Vec::new();
        TextEncoder::new().encode(&families, &mut output).unwrap();
        let text = String::from_utf8(output).unwrap();
        assert!(
            text.contains("# TYPE liminal_connections_open gauge"),
            "{text}"
        );
        assert!(text.contains("liminal_connections_open 3"), "{text}");
        assert!(
            text.contains("# TYPE liminal_channel_published_messages_total counter"),
            "{text}"
        );
        assert!(
            text.contains("liminal_channel_published_messages_total{channel=\"orders\"} 42"),
            "{text}"
        );
    }
}
