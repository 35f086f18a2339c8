//! SHELL. The PD leader's side of the MQTT keyspace bootstrap (see `pd::bootstrap` for the
//! decisions): reads and writes the record in the PD group, asks voters to create ranges.

use std::time::Instant;

use super::super::PD_GROUP;
use super::super::bootstrap::{BOOTSTRAP_KEY, BootstrapAction, BootstrapState, next_action};
use super::super::message::PdMessage;
use super::{Pending, Worker};
use crate::group::{Command, Epoch, Query, ReadPolicy, ReadRequest, WriteRequest};

impl Worker {
    /// The keyspace bootstrap's next step (on the PD leader).
    pub(super) fn bootstrap(&mut self, epoch: Epoch) {
        let Some(cfg) = self.cfg.bootstrap.clone() else { return };
        if self
            .pending
            .values()
            .any(|(_, p)| matches!(p, Pending::BootstrapRead | Pending::BootstrapWrite(_)))
        {
            return;
        }
        let Some((_, driver)) = &self.driver else { return };
        let now_ms = self.now_ms();
        let voters = self.cfg.voters.clone();
        let down_after = self.cfg.driver.placement.node_down_after_ms;
        let ready = !voters.is_empty()
            && voters.iter().all(|&v| driver.view().is_node_up(placement::NodeId(v), now_ms, down_after));
        let since = self.last_create.map_or(u64::MAX, |t| t.elapsed().as_millis() as u64);
        let plan = || crate::cluster::keys::bootstrap_plan(&voters, cfg.replicas, cfg.log_groups).ranges;
        let exists = |id| driver.view().range(placement::RangeId(id)).is_some();
        match next_action(&self.bootstrap, ready, plan, exists, since) {
            BootstrapAction::Wait => {}
            BootstrapAction::Read => {
                let query = Query::Get { key: BOOTSTRAP_KEY.to_vec() };
                self.request(Pending::BootstrapRead, |id, tx, store| {
                    store.read(
                        PD_GROUP,
                        ReadRequest { request_id: id, epoch, query, policy: ReadPolicy::ReadIndex },
                        tx,
                    )
                });
            }
            BootstrapAction::Record(ranges) => {
                tracing::info!(ranges = ranges.len(), "recording the MQTT keyspace bootstrap");
                let next = BootstrapState::Planned(ranges);
                let command = Command::CompareAndSet {
                    key: BOOTSTRAP_KEY.to_vec(),
                    expected: None,
                    new: next.encode(),
                };
                self.write_bootstrap(epoch, command, next);
            }
            BootstrapAction::Create(asks) => {
                self.last_create = Some(Instant::now());
                for (to, desc) in asks {
                    self.send(to, &PdMessage::Create(desc));
                }
            }
            BootstrapAction::Finish(ranges) => {
                let next = BootstrapState::Done(ranges);
                let command =
                    Command::Put { key: BOOTSTRAP_KEY.to_vec(), value: next.encode().unwrap_or_default() };
                self.write_bootstrap(epoch, command, next);
            }
        }
    }

    fn write_bootstrap(&mut self, epoch: Epoch, command: Command, next: BootstrapState) {
        self.request(Pending::BootstrapWrite(next), |id, tx, store| {
            store.propose(PD_GROUP, WriteRequest { request_id: id, epoch, command }, tx)
        });
    }

    pub(super) fn on_bootstrap_record(&mut self, value: Option<&[u8]>) {
        match BootstrapState::decode(value) {
            Ok(state) => self.bootstrap = state,
            Err(e) => tracing::error!(error = %e, "the bootstrap record does not decode; bootstrap stopped"),
        }
    }
}
