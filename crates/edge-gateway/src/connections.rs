//! A cap on the HTTP connections one client IP holds open at once, so one client (or one flood
//! of half-sent requests) cannot take every connection the gateway can keep.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

/// Open connections by peer IP. Only IPs with an open connection have an entry, so the map is
/// bounded by the connections the process can hold.
#[derive(Debug)]
pub struct ConnectionsPerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; dropping it (the connection ended) frees its place.
#[derive(Debug)]
pub struct ConnectionGuard {
    counter: Arc<ConnectionsPerIp>,
    ip: IpAddr,
}

impl ConnectionsPerIp {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `ip`, or `None` when it already holds `max`.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionGuard> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ConnectionGuard {
            counter: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip` now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_holds_at_most_max_connections_and_a_closed_one_frees_its_place() {
        let cap = ConnectionsPerIp::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = cap.try_acquire(a).unwrap();
        let _second = cap.try_acquire(a).unwrap();
        assert!(cap.try_acquire(a).is_none());
        // another client is not affected
        assert!(cap.try_acquire(b).is_some());
        drop(first);
        assert!(cap.try_acquire(a).is_some());
    }

    #[test]
    fn an_ip_without_connections_leaves_no_entry() {
        let cap = ConnectionsPerIp::new(1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        drop(cap.try_acquire(a));
        assert_eq!(cap.open_from(a), 0);
        assert!(cap.open.lock().unwrap().is_empty());
    }
}
