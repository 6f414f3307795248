//! Reading page by page, the same on both backends: the newest rows of many groups, and totals
//! added up per instance.

use crate::store::error::StoreError;
use crate::store::rows::{InstanceStats, RecordedMessage, SessionRow};

/// A row of [`STATS_SESSIONS`].
pub(crate) struct ReasonTotals {
    pub instance: String,
    pub reason: String,
    pub sessions: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages: u64,
}

/// Each instance's totals added up from its rows of [`STATS_SESSIONS`] (`servers` come with
/// theirs empty), its reasons in order; sessions of an instance not in `servers` are left out.
pub(crate) fn add_up(
    mut servers: Vec<InstanceStats>,
    groups: impl IntoIterator<Item = ReasonTotals>,
) -> Vec<InstanceStats> {
    let at: std::collections::HashMap<String, usize> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| (s.instance.clone(), i))
        .collect();
    for g in groups {
        if let Some(&i) = at.get(&g.instance) {
            let s = &mut servers[i];
            s.sessions += g.sessions;
            s.bytes_in += g.bytes_in;
            s.bytes_out += g.bytes_out;
            s.messages += g.messages;
            s.reasons.push((g.reason, g.sessions));
        }
    }
    for s in &mut servers {
        s.reasons.sort();
    }
    servers
}

/// A row [`newest`] can pick the newest of: ranked by a time, ties broken as its one-query
/// read breaks them.
pub(crate) trait Ranked {
    /// The time it is ranked by.
    fn at(&self) -> i64;
    /// Its order against another, the newer first (as its query's `ORDER BY ... DESC`).
    fn newer_first(&self, other: &Self) -> std::cmp::Ordering;
}

impl Ranked for RecordedMessage {
    fn at(&self) -> i64 {
        self.message.at
    }

    /// As [`RECORDED_MESSAGES`] orders them.
    fn newer_first(&self, other: &Self) -> std::cmp::Ordering {
        fn key(m: &RecordedMessage) -> (i64, &str, u64, u64) {
            (m.message.at, &m.instance, m.message.session, m.message.seq)
        }
        key(other).cmp(&key(self))
    }
}

impl Ranked for (String, SessionRow) {
    fn at(&self) -> i64 {
        self.1.closed
    }

    /// As [`NEWEST_SESSIONS`] orders them.
    fn newer_first(&self, other: &Self) -> std::cmp::Ordering {
        fn key((instance, s): &(String, SessionRow)) -> (i64, u64, &str) {
            (s.closed, s.id, instance)
        }
        key(other).cmp(&key(self))
    }
}

/// A group of rows (an instance, a session, a span of rows) with the time none of them is
/// newer than, when known.
pub(crate) type Bounded<G> = (G, Option<i64>);

/// The newest `last` rows of `groups`, read one group at a time by `read`, ordered as their
/// one query orders them ([`Ranked`]), each once however many groups held it. `groups` come
/// newest bound first, those without a bound before all ([`by_bound`] puts them so): reading
/// stops at the first group whose bound is older than the oldest of the newest `last` found
/// so far, and the groups after it are never asked for. Once `last` are found, `read` is also
/// given the time of the oldest of them: a group's rows older than that cannot be among the
/// newest and need not be read.
pub(crate) fn newest<G, R: Ranked>(
    groups: impl IntoIterator<Item = Result<Bounded<G>, StoreError>>,
    last: usize,
    mut read: impl FnMut(G, Option<i64>) -> Result<Vec<R>, StoreError>,
) -> Result<Vec<R>, StoreError> {
    let mut found: Vec<R> = Vec::new();
    for group in groups {
        let (group, bound) = group?;
        let oldest_kept = last
            .checked_sub(1)
            .and_then(|i| found.get(i))
            .map(Ranked::at);
        if oldest_kept
            .zip(bound)
            .is_some_and(|(oldest, bound)| oldest > bound)
        {
            break;
        }
        found.extend(read(group, oldest_kept)?);
        found.sort_by(R::newer_first);
        found.dedup_by(|a, b| a.newer_first(b).is_eq());
        found.truncate(last);
    }
    Ok(found)
}

/// `groups` in the order [`newest`] reads them: without a bound first, then newest bound first.
pub(crate) fn by_bound<G>(
    mut groups: Vec<Bounded<G>>,
) -> impl Iterator<Item = Result<Bounded<G>, StoreError>> {
    groups.sort_by_key(|(_, bound)| std::cmp::Reverse(bound.unwrap_or(i64::MAX)));
    groups.into_iter().map(Ok)
}
