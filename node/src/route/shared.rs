//! CORE. A shared subscription group (`$share/{group}/{filter}`, MQTT 5 section 4.8.2): its
//! members and the choice of one member per message (round robin, preferring connected
//! members). The broker owns the groups of this node's sessions; in a cluster the route
//! ranges hold the group-to-node rows (`G` rows of CLUSTER.md 2.2) and the publishing node
//! picks the node, this node the member.

use bytestring::ByteString;

use super::message::SessionKey;
use super::trie::SubEntry;

/// Identifies a shared subscription group inside one broker.
pub type ShareId = u64;

/// One shared subscription group.
#[derive(Debug)]
pub struct SharedGroup {
    /// The group's name (`{group}` in `$share/{group}/{filter}`).
    pub name: ByteString,
    /// The filter the group subscribes to.
    pub filter: ByteString,
    /// Members and their options.
    pub members: Vec<(SessionKey, SubEntry)>,
    /// Round-robin cursor.
    pub next: usize,
}

impl SharedGroup {
    /// An empty group `name` on `filter`.
    pub fn new(name: ByteString, filter: ByteString) -> Self {
        Self { name, filter, members: Vec::new(), next: 0 }
    }

    /// Adds `key` (or updates its options).
    pub fn join(&mut self, key: SessionKey, entry: SubEntry) {
        match self.members.iter_mut().find(|(k, _)| *k == key) {
            Some(m) => m.1 = entry,
            None => self.members.push((key, entry)),
        }
    }

    /// Removes `key`; whether it was a member.
    pub fn leave(&mut self, key: SessionKey) -> bool {
        let before = self.members.len();
        self.members.retain(|(k, _)| *k != key);
        self.members.len() != before
    }

    /// The member the next message goes to, round robin from the cursor: a connected one
    /// (`online`) if any, else any member (its session queues it); never `exclude`. Moves
    /// the cursor past the chosen member.
    pub fn choose(
        &mut self,
        exclude: Option<SessionKey>,
        online: impl Fn(SessionKey) -> bool,
    ) -> Option<(SessionKey, SubEntry)> {
        self.choose_among(exclude, online, true)
    }

    /// [`choose`](Self::choose), considering only connected members unless `offline_too`.
    pub fn choose_among(
        &mut self,
        exclude: Option<SessionKey>,
        online: impl Fn(SessionKey) -> bool,
        offline_too: bool,
    ) -> Option<(SessionKey, SubEntry)> {
        let n = self.members.len();
        for pass in 0..1 + usize::from(offline_too) {
            for step in 0..n {
                let i = (self.next + step) % n;
                let (k, e) = self.members[i];
                if Some(k) != exclude && (pass == 1 || online(k)) {
                    self.next = (i + 1) % n;
                    return Some((k, e));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_take_turns_and_connected_ones_go_first() {
        let mut g = SharedGroup::new("g".into(), "a/#".into());
        for k in [1, 2, 3] {
            g.join(k, SubEntry::default());
        }
        let all = |_| true;
        let picks: Vec<_> = (0..4).filter_map(|_| g.choose(None, all)).map(|(k, _)| k).collect();
        assert_eq!(picks, vec![1, 2, 3, 1]);
        assert_eq!(g.choose(None, |k| k == 3).map(|(k, _)| k), Some(3), "connected first");
        assert_eq!(g.choose(Some(1), |_| false).map(|(k, _)| k), Some(2), "offline member, not the excluded");
        assert_eq!(g.choose_among(None, |_| false, false), None, "no connected member");
        assert!(g.leave(2) && !g.leave(2));
        assert_eq!(g.choose(Some(1), |_| true).map(|(k, _)| k), Some(3));
        g.leave(1);
        g.leave(3);
        assert_eq!(g.choose(None, all), None);
    }
}
