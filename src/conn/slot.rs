//! The per-address connection count: an [`AddressSlot`] the listeners take for each
//! accepted connection and the session holds until it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One connection's place in the per-address count; released when dropped.
pub(crate) struct AddressSlot {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    key: Option<String>,
}

impl AddressSlot {
    /// Counts a connection from `ip`, or refuses it when the address is at its limit.
    /// Loopback addresses are not counted.
    pub(crate) fn take(
        counts: &Arc<Mutex<HashMap<String, usize>>>,
        ip: std::net::IpAddr,
        limit: usize,
    ) -> Option<AddressSlot> {
        if ip.is_loopback() {
            return Some(AddressSlot {
                counts: Arc::clone(counts),
                key: None,
            });
        }
        let key = crate::auth::address_bucket(ip);
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.clone()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: Arc::clone(counts),
            key: Some(key),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Some(key) = &self.key else { return };
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                map.remove(key);
            }
        }
    }
}
