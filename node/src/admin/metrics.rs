//! SHELL. `GET /metrics`: the MQTT server's figures (from [`OpsHandle::snapshot`]) and the
//! journal write histogram, followed by everything in the prometheus default registry
//! (raft-engine's own metrics), in the Prometheus text format.
//!
//! Each scrape builds a fresh registry from one snapshot, so the broker core never sees a
//! prometheus type and two servers in one process never collide in a global registry.

use prometheus::core::Collector;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::server::{OpsHandle, OpsSnapshot};

/// The content type of the text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn counter(name: &str, help: &str, value: u64) -> Result<Box<dyn Collector>, prometheus::Error> {
    let c = IntCounter::with_opts(Opts::new(name, help))?;
    c.inc_by(value);
    Ok(Box::new(c))
}

fn gauge(name: &str, help: &str, value: u64) -> Result<Box<dyn Collector>, prometheus::Error> {
    let g = IntGauge::with_opts(Opts::new(name, help))?;
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    Ok(Box::new(g))
}

fn labelled(
    name: &str,
    help: &str,
    label: &str,
    values: &[(String, u64)],
) -> Result<Box<dyn Collector>, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
    for (l, v) in values {
        c.with_label_values(&[l.as_str()]).inc_by(*v);
    }
    Ok(Box::new(c))
}

fn broker_collectors(s: &OpsSnapshot) -> Result<Vec<Box<dyn Collector>>, prometheus::Error> {
    let st = &s.stats;
    let d = &st.dropped;
    let refusals: Vec<(String, u64)> = s.refusals.iter().map(|(c, n)| (format!("0x{c:02x}"), *n)).collect();
    let dropped = [
        ("queue_full", d.queue_full),
        ("expired", d.expired),
        ("too_large", d.too_large),
        ("no_shared_member", d.no_member),
    ]
    .map(|(r, n)| (r.to_owned(), n));
    Ok(vec![
        gauge("flotilla_connections", "MQTT clients connected now.", st.clients_connected)?,
        gauge("flotilla_connections_max", "Most MQTT clients connected at once.", st.clients_maximum)?,
        counter("flotilla_connects_total", "CONNECTs accepted.", st.connects_accepted)?,
        labelled(
            "flotilla_connects_refused_total",
            "CONNECTs refused, by CONNACK reason code (MQTT 5 code).",
            "reason",
            &refusals,
        )?,
        gauge("flotilla_sessions", "Sessions held, connected or not.", st.sessions)?,
        counter("flotilla_messages_received_total", "PUBLISH packets received.", st.messages_received)?,
        counter("flotilla_messages_sent_total", "PUBLISH packets sent.", st.messages_sent)?,
        labelled("flotilla_messages_dropped_total", "Messages dropped, by reason.", "reason", &dropped)?,
        counter("flotilla_bytes_received_total", "Bytes read from MQTT clients.", s.bytes_received)?,
        counter("flotilla_bytes_sent_total", "Bytes written to MQTT clients.", s.bytes_sent)?,
        gauge("flotilla_subscriptions", "Subscriptions held.", s.subscriptions)?,
        gauge("flotilla_retained_messages", "Retained messages held.", s.retained)?,
        gauge("flotilla_journal_lag_bytes", "Journal bytes not yet durable.", s.journal_lag_bytes)?,
        gauge("flotilla_queued_messages", "Messages queued for sessions, connected or not.", s.queued)?,
        gauge("flotilla_inflight_messages", "Messages sent and not yet acknowledged.", s.inflight)?,
    ])
}

/// The text of one scrape.
pub(crate) fn render(ops: Option<&OpsHandle>) -> Result<Vec<u8>, prometheus::Error> {
    let registry = Registry::new();
    if let Some(ops) = ops {
        if let Some(snapshot) = ops.snapshot() {
            for c in broker_collectors(&snapshot)? {
                registry.register(c)?;
            }
        }
        if let Some(h) = ops.journal_histogram() {
            registry.register(Box::new(h))?;
        }
    }
    let mut families = registry.gather();
    families.extend(prometheus::gather());
    let mut out = Vec::with_capacity(16 << 10);
    TextEncoder::new().encode(&families, &mut out)?;
    Ok(out)
}
