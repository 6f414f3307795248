//! `session_spans`: which sessions each transaction of the writer recorded, so the newest are
//! found without sorting the whole table.

use crate::store::rows::Record;

/// A row of `session_spans`: sessions one transaction of the store writer recorded, with
/// ids close together, and the oldest and newest time they closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionSpan {
    pub first_id: u64,
    pub last_id: u64,
    pub first_closed: i64,
    pub last_closed: i64,
}

/// Ids further apart than this, within one transaction, start a new span. A span's rows are
/// read by id range: a long session closing beside new ones would otherwise make its span
/// reach back over every session opened since (each read to be passed over).
pub(super) const SPAN_GAP: u64 = 1024;

/// The spans a batch's sessions take, in order of id.
pub(crate) fn session_spans(batch: &[Record]) -> Vec<SessionSpan> {
    let mut sessions: Vec<(u64, i64)> = batch
        .iter()
        .filter_map(|r| match r {
            Record::Session(s) => Some((s.id, s.closed)),
            Record::Messages(_) | Record::Message(_) => None,
        })
        .collect();
    sessions.sort_unstable();
    let mut spans: Vec<SessionSpan> = Vec::new();
    for (id, closed) in sessions {
        match spans.last_mut() {
            Some(span) if id - span.last_id <= SPAN_GAP => {
                span.last_id = id;
                span.first_closed = span.first_closed.min(closed);
                span.last_closed = span.last_closed.max(closed);
            }
            _ => spans.push(SessionSpan {
                first_id: id,
                last_id: id,
                first_closed: closed,
                last_closed: closed,
            }),
        }
    }
    spans
}

impl SessionSpan {
    /// The times of [`SPAN_SESSIONS`] for this span, once the newest found so far reach back
    /// to `oldest_kept`: a session that closed before cannot be among them.
    pub(crate) fn closed_between(&self, oldest_kept: Option<i64>) -> (i64, i64) {
        let from = oldest_kept.map_or(self.first_closed, |t| t.max(self.first_closed));
        (from, self.last_closed)
    }
}
