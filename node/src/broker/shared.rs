//! CORE. Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 section 4.8.2, also offered
//! to 3.1.1 clients): each message goes to one member, round robin, preferring connected
//! members; messages a member left unacknowledged go to another member when it goes away.

use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;

use super::message::{Message, SessionKey};
use super::session::{Delivery, ShareId, SubEntry};
use super::{Broker, ShareName, Target};
pub(super) use crate::route::shared::SharedGroup;

impl Broker {
    pub(super) fn join_shared(
        &mut self,
        key: SessionKey,
        name: ByteString,
        filter: ByteString,
        entry: SubEntry,
    ) {
        let index_key = (name.clone(), filter.clone());
        let group = match self.shared_index.get(&index_key) {
            Some(&g) => g,
            None => {
                let g = self.next_group;
                self.next_group += 1;
                self.shared_index.insert(index_key, g);
                self.trie.insert(&filter, Target::Shared(g), SubEntry::default());
                self.shared.insert(g, SharedGroup::new(name, filter));
                g
            }
        };
        self.shared.get_mut(&group).expect("group just ensured").join(key, entry);
    }

    pub(super) fn leave_shared(&mut self, key: SessionKey, name: &str, filter: &str) -> bool {
        let index_key = (ByteString::from(name), ByteString::from(filter));
        let Some(&group) = self.shared_index.get(&index_key) else {
            return false;
        };
        let Some(g) = self.shared.get_mut(&group) else {
            return false;
        };
        let removed = g.leave(key);
        if g.members.is_empty() {
            let filter = g.filter.clone();
            self.shared.remove(&group);
            self.shared_index.remove(&index_key);
            self.trie.remove(&filter, Target::Shared(group));
        }
        removed
    }

    /// Picks a member for `msg` and queues it there; `exclude` skips one session (the one
    /// that just left). Returns false if the group has no eligible member.
    pub(super) fn deliver_shared(
        &mut self,
        now: Instant,
        group: ShareId,
        msg: &Arc<Message>,
        exclude: Option<SessionKey>,
    ) -> bool {
        self.deliver_shared_among(now, group, msg, exclude, true)
    }

    /// [`deliver_shared`](Self::deliver_shared), to connected members only unless
    /// `offline_too`.
    fn deliver_shared_among(
        &mut self,
        now: Instant,
        group: ShareId,
        msg: &Arc<Message>,
        exclude: Option<SessionKey>,
        offline_too: bool,
    ) -> bool {
        let Some(g) = self.shared.get_mut(&group) else {
            return false;
        };
        let online = |k: SessionKey| self.sessions.get(&k).is_some_and(|s| s.conn.is_some());
        let Some((key, entry)) = g.choose_among(exclude, online, offline_too) else {
            return false;
        };
        let d = Delivery {
            qos: msg.qos.min(entry.opts.qos),
            retain: msg.retain && entry.opts.retain_as_published,
            sub_ids: entry.sub_id.into_iter().collect(),
            shared: Some(group),
            msg_id: None,
            msg: msg.clone(),
        };
        self.enqueue(now, key, d);
        true
    }

    /// A member went away holding `d`: give it to another member, or drop it if none. In a
    /// cluster a connected member here goes first, then one on another node (the shell
    /// picks it; with none there, a member here that is offline queues it).
    pub(super) fn redeliver_shared(&mut self, now: Instant, from: SessionKey, d: Delivery) {
        let Some(group) = d.shared else {
            return;
        };
        if d.msg.is_expired(now) {
            return;
        }
        if self.cluster_enabled() {
            if self.deliver_shared_among(now, group, &d.msg, Some(from), false) {
                return;
            }
            if let Some(g) = self.shared.get(&group) {
                let share = (g.name.clone(), g.filter.clone());
                self.forward_shared(&d.msg, share);
                return;
            }
        }
        if !self.deliver_shared(now, group, &d.msg, Some(from)) {
            self.stats.count_drop(super::DropReason::NoMember);
        }
    }

    /// Delivers `msg` to one member each of the shared subscriptions `shares` (group,
    /// filter) this node holds; returns how many took it.
    pub(super) fn deliver_shares(&mut self, now: Instant, msg: &Arc<Message>, shares: &[ShareName]) -> usize {
        let mut n = 0;
        for share in shares {
            if let Some(&g) = self.shared_index.get(share)
                && self.deliver_shared(now, g, msg, None)
            {
                n += 1;
            }
        }
        n
    }
}
