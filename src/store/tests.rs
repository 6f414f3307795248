//! Spans and totals, checked on rows made by hand.

use crate::store::reading::{add_up, ReasonTotals};
use crate::store::rows::{InstanceStats, MessageBatch, Record, SessionRow};
use crate::store::spans::{session_spans, SessionSpan, SPAN_GAP};

fn session(id: u64, closed: i64) -> Record {
    Record::Session(SessionRow {
        id,
        peer: String::new(),
        transport: "udp".into(),
        opened: closed,
        closed,
        bytes_in: 0,
        bytes_out: 0,
        msgs_in: 0,
        msgs_out: 0,
        reason: "eof".into(),
    })
}

/// A transaction's sessions become spans of ids no further apart than `SPAN_GAP`, each
/// with the oldest and newest time its sessions closed; messages take none.
#[test]
fn sessions_far_apart_in_id_take_spans_of_their_own() {
    let far = 10 + 2 * SPAN_GAP + 1;
    let batch = [
        session(10 + SPAN_GAP, 50),
        Record::Messages(MessageBatch::new(3)),
        session(far, 40),
        session(12, 70),
        session(10, 60),
    ];
    let span = |first_id, last_id, first_closed, last_closed| SessionSpan {
        first_id,
        last_id,
        first_closed,
        last_closed,
    };
    assert_eq!(
        session_spans(&batch),
        [span(10, 10 + SPAN_GAP, 50, 70), span(far, far, 40, 40)]
    );
    assert!(session_spans(&[Record::Messages(MessageBatch::new(1))]).is_empty());
    assert_eq!(
        span(1, 9, 100, 200).closed_between(None),
        (100, 200),
        "all of it"
    );
    assert_eq!(span(1, 9, 100, 200).closed_between(Some(150)), (150, 200));
    assert_eq!(span(1, 9, 100, 200).closed_between(Some(50)), (100, 200));
}

/// `stats` adds each instance's rows by close reason into its totals, reasons in order,
/// and leaves out sessions of an instance no server row names.
#[test]
fn stats_add_up_each_instance_by_reason() {
    let server = |instance: &str| InstanceStats {
        instance: instance.into(),
        model: "epoll".into(),
        address: "tcp://127.0.0.1:1".into(),
        sessions: 0,
        bytes_in: 0,
        bytes_out: 0,
        messages: 0,
        reasons: Vec::new(),
        written: Some(9),
        spooled: None,
        waited: None,
        dropped: None,
    };
    let group = |instance: &str, reason: &str, n: u64| ReasonTotals {
        instance: instance.into(),
        reason: reason.into(),
        sessions: n,
        bytes_in: 10 * n,
        bytes_out: 100 * n,
        messages: 1000 * n,
    };
    let all = add_up(
        vec![server("b"), server("a"), server("idle")],
        [
            group("a", "reset", 2),
            group("gone", "eof", 7),
            group("b", "eof", 1),
            group("a", "eof", 3),
        ],
    );
    let got: Vec<_> = all
        .iter()
        .map(|s| {
            let (name, reasons) = (s.instance.as_str(), s.reasons.clone());
            (
                name,
                s.sessions,
                s.bytes_in,
                s.bytes_out,
                s.messages,
                reasons,
            )
        })
        .collect();
    let reasons = |r: &[(&str, u64)]| -> Vec<(String, u64)> {
        r.iter().map(|(s, n)| (s.to_string(), *n)).collect()
    };
    assert_eq!(
        got,
        [
            ("b", 1, 10, 100, 1000, reasons(&[("eof", 1)])),
            ("a", 5, 50, 500, 5000, reasons(&[("eof", 3), ("reset", 2)])),
            ("idle", 0, 0, 0, 0, reasons(&[])),
        ]
    );
    assert_eq!(all[0].written, Some(9), "the server's own columns kept");
}
