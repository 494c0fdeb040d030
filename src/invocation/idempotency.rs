//! Idempotency keys (REFERENCE §3.6): `<function>:<key>` → a pending claim or a published
//! execution id, expiring 5 minutes after the last write, with a hard entry cap.
//!
//! Invariants: at most one request owns a claim for a key at a time; a claim whose owner is
//! dropped (client gone, admission failed) is abandoned and its waiters woken, so nobody waits on a
//! claim forever; waiters sleep on a `Notify`, they never poll.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::execution::store::Liveness;
use crate::support::lock;

pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(300);

pub struct IdempotencyStore {
    inner: Mutex<Inner>,
    ttl: Duration,
    max_entries: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Arc<str>, Entry>,
    /// (key, write sequence) in write order; an item is live only if its sequence is the entry's.
    order: VecDeque<(Arc<str>, u64)>,
    next_seq: u64,
}

struct Entry {
    state: EntryState,
    expires: Instant,
    seq: u64,
}

enum EntryState {
    Pending { token: u64, notify: Arc<Notify> },
    Published(Arc<str>),
}

/// The answer to a lookup.
pub enum Claim {
    /// This request owns the key: create the execution, then [`ClaimGuard::publish`].
    Owner(ClaimGuard),
    /// The key maps to this live execution: replay it.
    Replay(Arc<str>),
}

/// Ownership of a pending key; abandons the claim when dropped unpublished.
pub struct ClaimGuard {
    store: Arc<IdempotencyStore>,
    key: Arc<str>,
    token: u64,
    done: bool,
}

impl ClaimGuard {
    pub fn publish(mut self, execution_id: Arc<str>) {
        self.done = true;
        let mut inner = lock(&self.store.inner);
        let seq = inner.bump();
        if let Some(entry) = inner.entries.get_mut(&self.key) {
            if let EntryState::Pending { token, notify } = &entry.state {
                if *token == self.token {
                    let notify = notify.clone();
                    entry.state = EntryState::Published(execution_id);
                    entry.expires = Instant::now() + self.store.ttl;
                    entry.seq = seq;
                    inner.order.push_back((self.key.clone(), seq));
                    notify.notify_waiters();
                }
            }
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut inner = lock(&self.store.inner);
        let ours = matches!(
            inner.entries.get(&self.key).map(|e| &e.state),
            Some(EntryState::Pending { token, .. }) if *token == self.token
        );
        if ours {
            if let Some(Entry {
                state: EntryState::Pending { notify, .. },
                ..
            }) = inner.entries.remove(&self.key)
            {
                notify.notify_waiters();
            }
        }
    }
}

impl Inner {
    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }
}

impl IdempotencyStore {
    pub fn new(max_entries: usize) -> Arc<Self> {
        Self::with_ttl(max_entries, IDEMPOTENCY_TTL)
    }

    pub fn with_ttl(max_entries: usize, ttl: Duration) -> Arc<Self> {
        Arc::new(IdempotencyStore {
            inner: Mutex::default(),
            ttl,
            max_entries: max_entries.max(1),
        })
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Claims `function:key`, or finds the live execution it maps to. `liveness` tells what the
    /// execution store holds for a published id: evicted ones are replaced, and keys of running
    /// executions are never evicted to honour the cap (that would dispatch them twice).
    pub async fn claim(
        self: &Arc<Self>,
        function: &str,
        key: &str,
        liveness: impl Fn(&str) -> Liveness,
    ) -> Claim {
        let full_key: Arc<str> = Arc::from(format!("{function}:{key}"));
        loop {
            let notify = {
                let mut inner = lock(&self.inner);
                let now = Instant::now();
                let current = inner.entries.get(&full_key).map(|e| {
                    if e.expires <= now {
                        None
                    } else {
                        Some(match &e.state {
                            EntryState::Pending { notify, .. } => Err(notify.clone()),
                            EntryState::Published(id) => Ok(id.clone()),
                        })
                    }
                });
                match current.flatten() {
                    Some(Ok(id)) if liveness(&id) != Liveness::Gone => return Claim::Replay(id),
                    Some(Err(notify)) => notify,
                    // Absent, expired, or published for an evicted execution: take it over.
                    _ => {
                        return Claim::Owner(
                            self.insert_claim(&mut inner, full_key, now, &liveness),
                        );
                    }
                }
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            // Register before re-checking, so a publish between the check and the wait is seen.
            notified.as_mut().enable();
            let still_pending = matches!(
                lock(&self.inner).entries.get(&full_key).map(|e| &e.state),
                Some(EntryState::Pending { notify: n, .. }) if Arc::ptr_eq(n, &notify)
            );
            if still_pending {
                notified.await;
            }
        }
    }

    fn insert_claim(
        self: &Arc<Self>,
        inner: &mut Inner,
        key: Arc<str>,
        now: Instant,
        liveness: &dyn Fn(&str) -> Liveness,
    ) -> ClaimGuard {
        self.evict(inner, now, liveness);
        let token = inner.bump();
        let seq = token;
        inner.entries.insert(
            key.clone(),
            Entry {
                state: EntryState::Pending {
                    token,
                    notify: Arc::new(Notify::new()),
                },
                expires: now + self.ttl,
                seq,
            },
        );
        inner.order.push_back((key.clone(), seq));
        ClaimGuard {
            store: self.clone(),
            key,
            token,
            done: false,
        }
    }

    /// Drops expired entries, and the oldest published ones while at the cap. Pending claims and
    /// keys of running executions are never evicted: their work is under way (the cap may be
    /// exceeded by them, bounded by the execution store's own cap).
    fn evict(&self, inner: &mut Inner, now: Instant, liveness: &dyn Fn(&str) -> Liveness) {
        let mut budget = inner.order.len();
        while budget > 0 {
            budget -= 1;
            let Some((key, seq)) = inner.order.pop_front() else {
                break;
            };
            let Some(entry) = inner.entries.get(&key) else {
                continue;
            };
            if entry.seq != seq {
                continue;
            }
            let pending = match &entry.state {
                EntryState::Pending { .. } => true,
                EntryState::Published(id) => liveness(id) == Liveness::Running,
            };
            let over_cap = inner.entries.len() >= self.max_entries;
            if pending {
                if over_cap {
                    // Keep it, look past it.
                    inner.order.push_back((key, seq));
                    continue;
                }
                inner.order.push_front((key, seq));
                break;
            }
            if entry.expires <= now || over_cap {
                inner.entries.remove(&key);
                continue;
            }
            inner.order.push_front((key, seq));
            break;
        }
    }

    /// The janitor's pass: drops expired entries.
    pub fn evict_expired(&self) {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        inner
            .entries
            .retain(|_, e| e.expires > now || matches!(e.state, EntryState::Pending { .. }));
        let Inner { entries, order, .. } = &mut *inner;
        order.retain(|(k, seq)| entries.get(k).is_some_and(|e| e.seq == *seq));
    }
}

#[cfg(test)]
mod tests;
