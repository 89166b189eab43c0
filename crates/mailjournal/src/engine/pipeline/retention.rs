//! Retention, in the pipeline's thread between its batches: archived messages older than
//! their definition's `retention_days` are deleted, then the content they leave unreferenced,
//! then the as-received copies (retired spool segments) older than `as_received_days`;
//! legal holds suspend all of it for what they cover.
//!
//! Each step is durable and idempotent: a message's rows go in one durable transaction that
//! also records its unreferenced content as garbage, the content files go after that, and a
//! retired segment's files go before its record does. A crash anywhere leaves nothing half
//! deleted; the next start (or the next run) finishes what was started.

use std::path::PathBuf;

use mailjournal_archive::{Expiry, Holds};
use mailjournal_queue::{Duration, ItemId, Timestamp};

use super::{Pipeline, ROUND};

/// What retention needs besides the policy: where the spool is, and how long a day is
/// (shorter in tests and measurements only).
#[derive(Debug, Clone)]
pub(in crate::engine) struct RetentionPlan {
    pub(in crate::engine) spool_root: PathBuf,
    pub(in crate::engine) day: Duration,
    /// When retention last ran.
    pub(in crate::engine) ran_at: Option<Timestamp>,
}

impl RetentionPlan {
    /// How often retention looks: once a minute, or more often when days are shortened.
    fn every(&self) -> Duration {
        Duration((self.day.0 / 1440).clamp(1000, 60_000))
    }
}

impl Pipeline {
    /// Retention runs in this pipeline (the engine sets it up; tests of other things do not).
    pub(in crate::engine) fn retain(&mut self, spool_root: PathBuf, day: Duration) {
        self.retention = Some(RetentionPlan {
            spool_root,
            day,
            ran_at: None,
        });
    }

    /// Runs retention when it is due. Outside a batch.
    pub(in crate::engine) fn run_retention_if_due(&mut self, now: Timestamp) {
        let Some(plan) = &self.retention else {
            return;
        };
        if plan.ran_at.is_some_and(|at| now.since(at) < plan.every()) || self.store_failed {
            return;
        }
        let plan = plan.clone();
        if let Some(plan) = &mut self.retention {
            plan.ran_at = Some(now);
        }
        let holds = Holds {
            addresses: self
                .policy
                .held_addresses
                .iter()
                .map(|a| a.as_str().to_owned())
                .collect(),
            items: self
                .policy
                .held_items
                .iter()
                .filter_map(|i| i.parse::<ItemId>().ok())
                .collect(),
        };
        let days = |n: u32| Duration(plan.day.0.saturating_mul(u64::from(n)));
        let expiries: Vec<Expiry> = self
            .policy
            .journals
            .iter()
            .filter_map(|j| {
                let d = &j.definition;
                Some(Expiry {
                    definition: d.description.clone(),
                    received_before: Timestamp(now.0.saturating_sub(days(d.retention_days?).0)),
                })
            })
            .collect();
        let mut messages = 0;
        while !expiries.is_empty() && !self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            match self.index.delete_expired(&expiries, &holds, ROUND, now) {
                Ok(deleted) => {
                    messages += deleted.len();
                    for id in &deleted {
                        tracing::debug!(%id, "archived message deleted: its retention ended");
                    }
                    if deleted.len() < ROUND {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "retention: cannot delete expired messages");
                    return;
                }
            }
        }
        let mut contents = 0;
        match self.index.content_garbage() {
            Ok(garbage) => {
                let mut removed = Vec::new();
                for hash in garbage {
                    match self.content.remove(&hash) {
                        Ok(()) => removed.push(hash),
                        Err(e) => {
                            tracing::error!(%hash, error = %e, "retention: cannot remove content")
                        }
                    }
                }
                // Erased for good (a store may only mark it until then) before the index
                // forgets it was garbage: a crash in between then removes it again.
                let erased = removed.is_empty()
                    || {
                        let durable = self.content.make_durable();
                        if let Err(e) = &durable {
                            tracing::error!(error = %e, "retention: cannot make content removal durable");
                        }
                        durable.is_ok()
                    };
                for hash in removed.into_iter().filter(|_| erased) {
                    match self.index.content_removed(&hash) {
                        Ok(()) => contents += 1,
                        Err(e) => {
                            tracing::error!(%hash, error = %e, "retention: cannot record content removed")
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "retention: cannot list garbage content"),
        }
        let mut segments = 0;
        if let Some(keep) = self.policy.as_received_days {
            let before = Timestamp(now.0.saturating_sub(days(keep).0));
            for segment in self.index.retired_before(before).unwrap_or_default() {
                let held = mailjournal_spool::kept_items(&plan.spool_root, segment)
                    .map_err(|e| e.to_string())
                    .and_then(|ids| self.index.any_held(&ids, &holds).map_err(|e| e.to_string()));
                match held {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(segment, error = %e, "retention: cannot read a kept segment");
                        continue;
                    }
                }
                let deleted = mailjournal_spool::delete_kept(&plan.spool_root, segment)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        self.index
                            .segment_deleted(segment, now)
                            .map_err(|e| e.to_string())
                    });
                match deleted {
                    Ok(()) => segments += 1,
                    Err(e) => {
                        tracing::error!(segment, error = %e, "retention: cannot delete a kept segment")
                    }
                }
            }
        }
        if messages + contents + segments > 0 {
            tracing::info!(
                messages,
                contents,
                as_received_segments = segments,
                "retention: deleted what was kept long enough"
            );
        }
    }
}
