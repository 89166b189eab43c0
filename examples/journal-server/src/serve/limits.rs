//! Connection admission: `max_connections` in all, [`MAX_CONNECTIONS_PER_CLIENT`] from one
//! client (an IPv4 address, or an IPv6 /64: see [`client_key`]), and the stress signal that shortens every session's timeouts while the server is
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
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Connections one client address may hold at once.
pub(crate) const MAX_CONNECTIONS_PER_CLIENT: usize = 50;

/// What one client's connections are counted under: its IPv4 address (also when it arrives
/// IPv4-mapped on a dual-stack listener), or the /64 network of its IPv6 address. A host is
/// usually given a whole /64 and may use any address in it, so a cap per IPv6 address would
/// cap nothing.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// Why a connection was not admitted: the reply it gets before it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` are open.
    Full,
    /// The client (see [`client_key`]) holds [`MAX_CONNECTIONS_PER_CLIENT`] already.
    PerClient,
}

impl Refusal {
    /// The reply code.
    pub(crate) fn code(self) -> u16 {
        421
    }

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
    /// Keyed by [`client_key`].
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
        let client = client_key(ip);
        let mut open = self.lock();
        if open.total >= self.max {
            return Err(Refusal::Full);
        }
        let from_client = open.per_client.entry(client).or_default();
        if *from_client >= MAX_CONNECTIONS_PER_CLIENT {
            return Err(Refusal::PerClient);
        }
        *from_client += 1;
        open.total += 1;
        self.update_stress(open.total);
        Ok(Permit {
            limits: self.clone(),
            client,
        })
    }

    fn release(&self, client: IpAddr) {
        let mut open = self.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(from_client) = open.per_client.get_mut(&client) {
            *from_client = from_client.saturating_sub(1);
            if *from_client == 0 {
                open.per_client.remove(&client);
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
    /// The [`client_key`] it counts under.
    client: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limits.release(self.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        let v6 = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_key(v6("2001:db8:1:2:aaaa::1")),
            client_key(v6("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_eq!(client_key(v6("2001:db8:1:2::1")), v6("2001:db8:1:2::"));
        assert_ne!(
            client_key(v6("2001:db8:1:2::1")),
            client_key(v6("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(v6("::ffff:198.51.100.7")), v6("198.51.100.7"));
        assert_eq!(client_key(v6("198.51.100.7")), v6("198.51.100.7"));

        let limits = Limits::new(1000);
        let held: Vec<_> = (0..MAX_CONNECTIONS_PER_CLIENT)
            .map(|i| limits.admit(v6(&format!("2001:db8::{:x}", i + 1))).unwrap())
            .collect();
        assert_eq!(
            limits.admit(v6("2001:db8::ffff:1")).err(),
            Some(Refusal::PerClient),
            "a fresh address in the same /64 is the same client"
        );
        assert!(limits.admit(v6("2001:db8:0:1::1")).is_ok());
        drop(held);
        let mapped: Vec<_> = (0..MAX_CONNECTIONS_PER_CLIENT)
            .map(|_| limits.admit(v6("::ffff:127.0.0.9")).unwrap())
            .collect();
        assert_eq!(limits.admit(ip(9)).err(), Some(Refusal::PerClient));
        drop(mapped);
    }

    proptest! {
        /// Any sequence of arrivals and departures, against a model: who is refused and why,
        /// and when stress begins and ends.
        #[test]
        fn admission_follows_the_model(
            max in 1usize..160,
            // Three arrivals to one departure, from two clients: both the total and the
            // per-client cap are reached.
            steps in proptest::collection::vec((0u8..4, 0u8..2, any::<prop::sample::Index>()), 0..600),
        ) {
            let limits = Limits::new(max);
            let stress = limits.stress();
            let stress_from = (max * 3).div_ceil(4).max(1);
            let calm_below = (max / 2).max(1);
            let mut held: Vec<(u8, Permit)> = Vec::new();
            let mut stressed = false;
            for (arrive, client, pick) in steps {
                if arrive > 0 || held.is_empty() {
                    let from_client = held.iter().filter(|(c, _)| *c == client).count();
                    match limits.admit(ip(client)) {
                        Ok(permit) => {
                            prop_assert!(held.len() < max && from_client < MAX_CONNECTIONS_PER_CLIENT);
                            held.push((client, permit));
                        }
                        Err(Refusal::Full) => prop_assert_eq!(held.len(), max),
                        Err(Refusal::PerClient) => {
                            prop_assert!(held.len() < max);
                            prop_assert_eq!(from_client, MAX_CONNECTIONS_PER_CLIENT);
                        }
                    }
                } else {
                    held.swap_remove(pick.index(held.len()));
                }
                let open = held.len();
                stressed = if stressed { open >= calm_below } else { open >= stress_from };
                prop_assert_eq!(*stress.borrow(), stressed, "{} of {} open", open, max);
            }
        }
    }
}
