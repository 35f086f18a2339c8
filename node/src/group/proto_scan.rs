//! CORE. A total, non-recursive scan of the protobuf wire format of raft-rs `eraftpb`
//! messages, run on peer input before rust-protobuf parses it.
//!
//! rust-protobuf 2.x is affected by RUSTSEC-2024-0437 (uncontrolled recursion on nested
//! protobuf groups). eraftpb is proto3 and has no group fields, so the deprecated group
//! wire types (3 START_GROUP, 4 END_GROUP) never appear in a message rust-protobuf
//! serializes; [`scan`] refuses any input holding one, at any nesting level, before the
//! parser sees it. Besides the raft `Message` itself, conf-change entries carry a
//! `ConfChange` / `ConfChangeV2` in their `data`, which raft-rs parses when a leader steps a
//! proposal and the group parses when it applies the entry: those are scanned too.
//!
//! The scan reads tags and lengths exactly as rust-protobuf 2.28 does (varints of at most
//! 10 bytes; tags, lengths and enums truncated to 32 bits; the last occurrence of a scalar
//! winning), so the fields it descends into are the ones the parser will parse as
//! messages. It descends only where the schema has a message (bytes
//! such as `context` or a normal entry's `data` are opaque to both), with an explicit stack
//! whose depth is bounded by the schema ([`MAX_DEPTH`]); every step consumes input, so the
//! scan is linear in the input and never panics.

/// The deepest nesting of eraftpb messages (`Message` > `Snapshot` > `SnapshotMetadata` >
/// `ConfState` is 4); deeper input cannot be produced by the schema and is refused.
pub const MAX_DEPTH: usize = 8;

/// The eraftpb messages the scanner knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// `eraftpb.Message`: `entries` (7) and `snapshot` (9) are messages.
    Message,
    /// `eraftpb.Entry`: `data` (4) is a `ConfChange` when `entry_type` (1) is
    /// `EntryConfChange`, a `ConfChangeV2` when it is `EntryConfChangeV2`, else opaque.
    Entry,
    /// `eraftpb.Snapshot`: `metadata` (2) is a message; `data` (1) is opaque.
    Snapshot,
    /// `eraftpb.SnapshotMetadata`: `conf_state` (1) is a message.
    SnapshotMetadata,
    /// `eraftpb.ConfState`: packed `uint64` lists and a bool, no messages.
    ConfState,
    /// `eraftpb.ConfChange`: no messages (`context` is opaque).
    ConfChange,
    /// `eraftpb.ConfChangeV2`: `changes` (2) are messages.
    ConfChangeV2,
    /// `eraftpb.ConfChangeSingle`: no messages.
    ConfChangeSingle,
}

impl Schema {
    /// The schema of field `field` where it is a message (always length-delimited).
    fn submessage(self, field: u32) -> Option<Self> {
        match (self, field) {
            (Self::Message, 7) => Some(Self::Entry),
            (Self::Message, 9) => Some(Self::Snapshot),
            (Self::Snapshot, 2) => Some(Self::SnapshotMetadata),
            (Self::SnapshotMetadata, 1) => Some(Self::ConfState),
            (Self::ConfChangeV2, 2) => Some(Self::ConfChangeSingle),
            _ => None,
        }
    }
}

/// Why a payload was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// A deprecated group wire type (3 or 4), which eraftpb never uses.
    #[error("protobuf group wire type {wire_type} in field {field} of {schema:?}")]
    Group {
        /// The message the tag was found in.
        schema: Schema,
        /// The field number.
        field: u32,
        /// 3 (START_GROUP) or 4 (END_GROUP).
        wire_type: u8,
    },
    /// Wire type 6 or 7, or field number 0.
    #[error("invalid protobuf tag {0:#x}")]
    BadTag(u32),
    /// The input ended inside a field.
    #[error("truncated protobuf field")]
    Truncated,
    /// A varint longer than 10 bytes.
    #[error("protobuf varint longer than 10 bytes")]
    BadVarint,
    /// Messages nested deeper than [`MAX_DEPTH`].
    #[error("protobuf messages nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_START_GROUP: u8 = 3;
const WIRE_END_GROUP: u8 = 4;
const WIRE_FIXED32: u8 = 5;
const ENTRY_TYPE_FIELD: u32 = 1;
const ENTRY_DATA_FIELD: u32 = 4;
const ENTRY_CONF_CHANGE: i32 = 1;
const ENTRY_CONF_CHANGE_V2: i32 = 2;

/// One field's value, as far as the scan cares.
enum Value<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

/// A message being scanned: its schema, the rest of its bytes, and for an `Entry` what
/// decides whether its `data` is a conf change.
struct Level<'a> {
    schema: Schema,
    rest: &'a [u8],
    entry_type: i32,
    entry_data: &'a [u8],
}

impl<'a> Level<'a> {
    fn new(schema: Schema, input: &'a [u8]) -> Self {
        Self { schema, rest: input, entry_type: 0, entry_data: &[] }
    }

    /// Reads one field; `None` at the end of the message.
    fn next_field(&mut self) -> Option<Result<(u32, Value<'a>), ScanError>> {
        if self.rest.is_empty() {
            return None;
        }
        Some(self.read_field())
    }

    fn read_field(&mut self) -> Result<(u32, Value<'a>), ScanError> {
        // rust-protobuf reads a tag as a varint truncated to 32 bits.
        let tag = self.varint()? as u32;
        let (field, wire_type) = (tag >> 3, (tag & 7) as u8);
        if field == 0 {
            return Err(ScanError::BadTag(tag));
        }
        let value = match wire_type {
            WIRE_VARINT => Value::Varint(self.varint()?),
            WIRE_FIXED64 => self.take(8).map(|_| Value::Fixed)?,
            WIRE_LEN => {
                // Lengths too are read as 32-bit varints.
                let len = self.varint()? as u32;
                Value::Len(self.take(len as usize)?)
            }
            WIRE_FIXED32 => self.take(4).map(|_| Value::Fixed)?,
            WIRE_START_GROUP | WIRE_END_GROUP => {
                return Err(ScanError::Group { schema: self.schema, field, wire_type });
            }
            _ => return Err(ScanError::BadTag(tag)),
        };
        Ok((field, value))
    }

    /// A varint of at most 10 bytes; bits past 64 are dropped, as rust-protobuf does.
    fn varint(&mut self) -> Result<u64, ScanError> {
        let mut value = 0u64;
        for (i, &b) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(if self.rest.len() < 10 { ScanError::Truncated } else { ScanError::BadVarint })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ScanError> {
        if n > self.rest.len() {
            return Err(ScanError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    /// Notes the fields of an `Entry` that decide what its `data` is.
    fn note_entry_field(&mut self, field: u32, value: &Value<'a>) {
        match (field, value) {
            (ENTRY_TYPE_FIELD, Value::Varint(v)) => {
                // An enum is read as an int32; an unknown value fails the parse, so keeping
                // the last known one here changes nothing.
                let v = *v as u32 as i32;
                if (0..=ENTRY_CONF_CHANGE_V2).contains(&v) {
                    self.entry_type = v;
                }
            }
            (ENTRY_DATA_FIELD, Value::Len(data)) => self.entry_data = data,
            _ => {}
        }
    }

    /// The conf change a finished `Entry` carries in its `data`, if it is one.
    fn conf_change(&self) -> Option<Self> {
        let schema = match (self.schema, self.entry_type) {
            (Schema::Entry, ENTRY_CONF_CHANGE) => Schema::ConfChange,
            (Schema::Entry, ENTRY_CONF_CHANGE_V2) => Schema::ConfChangeV2,
            _ => return None,
        };
        Some(Self::new(schema, self.entry_data))
    }
}

/// Checks that `input`, read as a `schema` message, holds no group wire type at any level
/// rust-protobuf would parse, and is well-formed as far as the scan reads it.
pub fn scan(schema: Schema, input: &[u8]) -> Result<(), ScanError> {
    let mut stack = Vec::with_capacity(MAX_DEPTH);
    stack.push(Level::new(schema, input));
    while let Some(level) = stack.last_mut() {
        let Some(field) = level.next_field() else {
            let done = stack.pop();
            if let Some(cc) = done.and_then(|l| l.conf_change()) {
                stack.push(cc);
            }
            continue;
        };
        let (field, value) = field?;
        if level.schema == Schema::Entry {
            level.note_entry_field(field, &value);
        }
        if let (Some(sub), Value::Len(bytes)) = (level.schema.submessage(field), value) {
            if stack.len() >= MAX_DEPTH {
                return Err(ScanError::TooDeep);
            }
            stack.push(Level::new(sub, bytes));
        }
    }
    Ok(())
}

/// [`scan`] of a raft `eraftpb.Message`.
pub fn scan_raft_message(input: &[u8]) -> Result<(), ScanError> {
    scan(Schema::Message, input)
}

#[cfg(test)]
mod tests;
