//! Connection admission: `max_connections` in all, [`MAX_CONNECTIONS_PER_CLIENT`] from one
//! address, and the stress signal that shortens every session's timeouts while the server is
//! close to full.
//!
//! Why stress: RFC 5321's timeouts let an idle client hold a connection for five minutes.
//! A few hosts opening idle connections could fill `max_connections` and keep a tenant's
//! journal connector out (it hears `421` and retries later). Postfix answers the same threat
//! with stress-dependent behaviour (`smtpd_timeout = ${stress?10}${stress:300}s`): while its
//! server processes are all busy, clients get ten seconds per command. Here stress begins when
//! three quarters of `max_connections` are open (before anyone is refused) and ends once fewer
//! than half are, so that it does not flap around one number.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Connections one client address may hold at once.
pub(crate) const MAX_CONNECTIONS_PER_CLIENT: usize = 50;

/// Why a connection was not admitted: the reply it gets before it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` are open.
    Full,
    /// The client's address holds [`MAX_CONNECTIONS_PER_CLIENT`] already.
    PerClient,
}

impl Refusal {
    /// The reply line, CRLF included.
    pub(crate) fn reply(self) -> &'static str {
        match self {
            Refusal::Full => "421 4.3.2 Too many connections, try again later\r\n",
            Refusal::PerClient => "421 4.7.0 Too many connections from your address\r\n",
        }
    }
}

/// Open connections, in all and per client address, and whether the server is under stress.
pub(crate) struct Limits {
    max: usize,
    /// Stress begins at this many open connections ...
    stress_from: usize,
    /// ... and ends below this many.
    calm_below: usize,
    open: Mutex<Open>,
    stress: watch::Sender<bool>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl Limits {
    /// Limits for at most `max` connections at once (configuration validation refuses 0).
    pub(crate) fn new(max: usize) -> Arc<Limits> {
        Arc::new(Limits {
            max,
            stress_from: (max * 3).div_ceil(4).max(1),
            calm_below: (max / 2).max(1),
            open: Mutex::new(Open::default()),
            stress: watch::channel(false).0,
        })
    }

    /// Follows the stress signal: `true` while sessions should use the short timeouts.
    pub(crate) fn stress(&self) -> watch::Receiver<bool> {
        self.stress.subscribe()
    }

    /// Admits a connection from `ip`, or says why not. The permit counts it until dropped.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let mut open = self.lock();
        if open.total >= self.max {
            return Err(Refusal::Full);
        }
        let from_client = open.per_client.entry(ip).or_default();
        if *from_client >= MAX_CONNECTIONS_PER_CLIENT {
            return Err(Refusal::PerClient);
        }
        *from_client += 1;
        open.total += 1;
        self.update_stress(open.total);
        Ok(Permit {
            limits: self.clone(),
            ip,
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(from_client) = open.per_client.get_mut(&ip) {
            *from_client = from_client.saturating_sub(1);
            if *from_client == 0 {
                open.per_client.remove(&ip);
            }
        }
        self.update_stress(open.total);
    }

    /// Called with the count still locked, so that two changes cannot report out of order.
    fn update_stress(&self, total: usize) {
        let max = self.max;
        self.stress.send_if_modified(|stressed| {
            let now = if *stressed {
                total >= self.calm_below
            } else {
                total >= self.stress_from
            };
            if now == *stressed {
                return false;
            }
            *stressed = now;
            if now {
                tracing::warn!(open = total, max, "under stress: idle clients get short timeouts until fewer than half the connections are open");
            } else {
                tracing::info!(open = total, max, "stress over: normal timeouts");
            }
            true
        });
    }

    /// The counts stay usable even if a thread panicked while holding them: they are plain
    /// numbers, never left half-updated.
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One admitted connection; dropping it gives its place back.
pub(crate) struct Permit {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limits.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn max_connections_in_all_then_refused_until_one_leaves() {
        let limits = Limits::new(3);
        let permits: Vec<_> = (1..=3).map(|i| limits.admit(ip(i)).unwrap()).collect();
        assert_eq!(limits.admit(ip(9)).err(), Some(Refusal::Full));
        drop(permits);
        assert!(limits.admit(ip(9)).is_ok());
    }

    #[test]
    fn one_address_holds_at_most_its_share() {
        let limits = Limits::new(1000);
        let held: Vec<_> = (0..MAX_CONNECTIONS_PER_CLIENT)
            .map(|_| limits.admit(ip(1)).unwrap())
            .collect();
        assert_eq!(limits.admit(ip(1)).err(), Some(Refusal::PerClient));
        // Others are not affected, and a place given back is free again.
        let other = limits.admit(ip(2)).unwrap();
        drop(other);
        drop(held.into_iter().next());
        assert!(limits.admit(ip(1)).is_ok());
    }

    #[test]
    fn stress_from_three_quarters_until_under_half() {
        let limits = Limits::new(8);
        let stress = limits.stress();
        let mut held = Vec::new();
        for i in 1..=5 {
            held.push(limits.admit(ip(i)).unwrap());
            assert!(!*stress.borrow(), "{i} of 8 open is no stress");
        }
        held.push(limits.admit(ip(6)).unwrap());
        assert!(*stress.borrow(), "6 of 8 open is stress");
        // Hysteresis: still under stress at 5 and at 4 open, over at 3.
        held.pop();
        held.pop();
        assert!(*stress.borrow(), "4 of 8 open is still stress");
        held.pop();
        assert!(!*stress.borrow(), "3 of 8 open is calm again");
        held.extend((10..=12).map(|i| limits.admit(ip(i)).unwrap()));
        assert!(*stress.borrow(), "and stress again at 6");
    }
}
