//! Sessions as servers record them, for the backends' tests: three instances' batches.

use crate::store::handle::Backend;
use crate::store::rows::{Record, ServerRow, SessionRow};

/// `stream` (connections opened 10 ms apart, most closing within 50 ms, some after
/// seconds, a few only at the end), `datagram` (a session per datagram, closed as it
/// opened, ids in order) and `twin` (the same ids and times as `stream`, so every session
/// ties with one of another instance). Each instance's sessions are handed over as they
/// close (a stream session now and then late, among newer ones: spans that overlap; the
/// datagrams' spans do not), in transactions of 1 to 60; times are whole milliseconds
/// (ties) from `from`.
pub(crate) fn batches(from: i64) -> Vec<(&'static str, Vec<Vec<Record>>)> {
    let mut seed = 11u64;
    let mut random = move |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % n
    };
    let ms = 1_000;
    let mut stream: Vec<(i64, u64, i64)> = Vec::new(); // (closed, id, opened)
    for id in 1..=600 {
        let opened = from + id as i64 * 10 * ms;
        let lasted = match random(20) {
            0 => random(8_000),
            1 => 100_000,
            _ => random(50),
        } as i64;
        stream.push((opened + lasted * ms, id, opened));
    }
    let datagram: Vec<(i64, u64, i64)> = (1..=3_000)
        .map(|id| {
            let at = from + id as i64 * 2 * ms + random(3) as i64 * ms;
            (at, id, at)
        })
        .collect();
    let mut batches = Vec::new();
    for (instance, sessions) in INSTANCES
        .into_iter()
        .zip([stream.clone(), datagram, stream])
    {
        let mut queue: Vec<(i64, Record)> = sessions
            .into_iter()
            .map(|(closed, id, opened)| {
                let late = if instance != "datagram" && random(15) == 0 {
                    random(3_000)
                } else {
                    0
                };
                // Every column its own value, so that one bound to another's place shows.
                let transport = if instance == "datagram" { "udp" } else { "tcp" };
                let row = SessionRow {
                    id,
                    peer: format!("{transport}://127.0.0.1:{}", 40_000 + id % 7),
                    transport: transport.into(),
                    opened,
                    closed,
                    bytes_in: id,
                    bytes_out: 2 * id + 1,
                    msgs_in: id % 5,
                    msgs_out: id % 5 + 1,
                    reason: ["eof", "reset", "timeout"][id as usize % 3].into(),
                };
                (closed + late as i64 * ms, Record::Session(row))
            })
            .collect();
        queue.sort_by_key(|(handed, _)| *handed);
        let mut records = queue.into_iter().map(|(_, r)| r).peekable();
        let mut transactions = Vec::new();
        while records.peek().is_some() {
            let size = 1 + random(60) as usize;
            transactions.push(records.by_ref().take(size).collect());
        }
        batches.push((instance, transactions));
    }
    batches
}

/// The instances [`batches`] records.
pub(crate) const INSTANCES: [&str; 3] = ["stream", "datagram", "twin"];

/// Records [`batches`] into `db` (each instance started first by `start`, as a server
/// starts) and returns the sessions written, with their instance, in order of instance and
/// id.
pub(crate) fn record_into<B: Backend>(
    db: &mut B,
    start: impl Fn(&mut B, &ServerRow),
) -> Vec<(String, SessionRow)> {
    for instance in INSTANCES {
        start(db, &ServerRow::for_test(instance, 0));
    }
    let mut recorded = Vec::new();
    for (instance, batches) in batches(1_000_000) {
        for batch in batches {
            db.write(instance, &batch).unwrap();
            for record in batch {
                if let Record::Session(s) = record {
                    recorded.push((instance.to_string(), s));
                }
            }
        }
    }
    in_key_order(recorded)
}

/// `sessions` in order of instance and id.
pub(crate) fn in_key_order(mut sessions: Vec<(String, SessionRow)>) -> Vec<(String, SessionRow)> {
    sessions.sort_by(|a, b| (&a.0, a.1.id).cmp(&(&b.0, b.1.id)));
    sessions
}

/// Checks what `sessions` reads through spans against one query over the whole table
/// (`read` gives both, for a count) for every count to 100 (each cuts at another time,
/// ties among them) and some more; returns how many sessions were checked.
pub(crate) fn assert_spans_match_one_query(
    mut read: impl FnMut(usize) -> (Vec<(String, SessionRow)>, Vec<(String, SessionRow)>),
) -> usize {
    let mut checked = 0;
    for last in (1..=100).chain([333, 1_000, 4_000, 100_000]) {
        let (spans, in_one_query) = read(last);
        let differ = spans.iter().zip(&in_one_query).position(|(a, b)| a != b);
        assert!(
            spans.len() == in_one_query.len() && differ.is_none(),
            "--last {last}: {} read, {} in one query, the first difference at {differ:?}",
            spans.len(),
            in_one_query.len()
        );
        checked += spans.len();
    }
    checked
}
