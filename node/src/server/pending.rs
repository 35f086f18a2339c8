//! SHELL. Sockets that have not sent CONNECT yet, counted per source address, so that one
//! address cannot hold every connection slot with idle sockets
//! (`max-pending-connects-per-address`).

use std::net::IpAddr;
use std::sync::Mutex;

use rustc_hash::FxHashMap;

/// Pending-CONNECT sockets per source address, shared by the reactors.
pub(super) struct PendingConnects {
    /// Most pending sockets per address; 0 is no limit.
    max: u32,
    counts: Mutex<FxHashMap<IpAddr, u32>>,
}

impl PendingConnects {
    pub(super) fn new(max: u32) -> Self {
        Self { max, counts: Mutex::new(FxHashMap::default()) }
    }

    /// Counts a new socket from `ip`; false if the address is at its limit (the caller
    /// closes the socket).
    pub(super) fn admit(&self, ip: IpAddr) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_default();
        if self.max > 0 && *n >= self.max {
            if *n == 0 {
                counts.remove(&ip);
            }
            return false;
        }
        *n += 1;
        true
    }

    /// A socket from `ip` sent CONNECT, or closed before it did.
    pub(super) fn release(&self, ip: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_at_its_limit_is_refused_until_one_of_its_sockets_is_released() {
        let p = PendingConnects::new(2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(p.admit(a) && p.admit(a));
        assert!(!p.admit(a), "third pending socket from one address");
        assert!(p.admit(b), "another address is not affected");
        p.release(a);
        assert!(p.admit(a));
        p.release(a);
        p.release(a);
        p.release(b);
        assert!(p.counts.lock().expect("lock").is_empty(), "released addresses are forgotten");
    }
}
