//! CORE. Bridges raft-rs's `slog` records into `tracing` (target `raft`).
//!
//! raft-rs logs at `info` on every role change; with thousands of groups that is noise, so
//! slog `Info` maps to tracing `DEBUG` and `Debug`/`Trace` to `TRACE`. `Warning` and above
//! keep their level. A record is formatted only if its tracing level is enabled.

use std::fmt::{self, Write as _};

use slog::{Drain, KV, Level, OwnedKVList, Record};

/// A `slog::Drain` that forwards every record to `tracing`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        macro_rules! forward {
            ($lvl:expr) => {
                if tracing::enabled!(target: "raft", $lvl) {
                    let text = format_record(record, values);
                    tracing::event!(target: "raft", $lvl, "{text}");
                }
            };
        }
        match record.level() {
            Level::Critical | Level::Error => forward!(tracing::Level::ERROR),
            Level::Warning => forward!(tracing::Level::WARN),
            Level::Info => forward!(tracing::Level::DEBUG),
            Level::Debug | Level::Trace => forward!(tracing::Level::TRACE),
        }
        Ok(())
    }
}

/// The message followed by ` key=value` pairs, the record's own first.
fn format_record(record: &Record<'_>, values: &OwnedKVList) -> String {
    let mut out = String::with_capacity(128);
    let _ = write!(out, "{}", record.msg());
    let mut ser = KvWriter(&mut out);
    let _ = record.kv().serialize(record, &mut ser);
    let _ = values.serialize(record, &mut ser);
    out
}

struct KvWriter<'a>(&'a mut String);

impl slog::Serializer for KvWriter<'_> {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

/// A root logger for raft-rs that writes through [`TracingDrain`].
pub fn raft_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_message_and_pairs() {
        let logger = slog::Logger::root(CaptureDrain, slog::o!("group" => 7));
        slog::info!(logger, "became leader at term {term}", term = 3; "raft_id" => 1);
    }

    struct CaptureDrain;

    impl Drain for CaptureDrain {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
            let text = format_record(record, values);
            assert!(text.starts_with("became leader at term 3"), "{text}");
            assert!(text.contains("raft_id=1"), "{text}");
            assert!(text.contains("group=7"), "{text}");
            Ok(())
        }
    }
}
