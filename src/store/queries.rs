//! The SQL both backends send as it is.

/// The query behind [`Store::recorded_messages`], the same on both backends: the newest
/// first, so `LIMIT` keeps the last ones.
pub(crate) const RECORDED_MESSAGES: &str = "SELECT m.instance, s.peer, m.session, m.seq, m.at, m.request, m.reply
    FROM messages m LEFT JOIN sessions s ON s.instance = m.instance AND s.id = m.session
    WHERE (? IS NULL OR m.instance = ?) AND (? IS NULL OR m.session = ?) AND (? IS NULL OR s.peer = ?)
    ORDER BY m.at DESC, m.instance DESC, m.session DESC, m.seq DESC LIMIT ?";

/// The query behind [`Store::sessions`] read whole (with `--peer`, or where spans cannot be
/// used), the same on both backends: the newest first, so `LIMIT` keeps the last ones.
pub(crate) const NEWEST_SESSIONS: &str = "SELECT instance, id, peer, transport, opened, closed, bytes_in, bytes_out, msgs_in, msgs_out, reason
    FROM sessions WHERE (? IS NULL OR peer = ?) ORDER BY closed DESC, id DESC, instance DESC LIMIT ?";

/// The spans of `session_spans`, newest first through their index on `last_closed`.
pub(crate) const SESSION_SPANS: &str =
    "SELECT instance, first_id, last_id, first_closed, last_closed FROM session_spans ORDER BY last_closed DESC";

/// One span's sessions (instance, ids from, to, closed from, to, how many), newest first.
/// The ids are the key's second column, so this reads the span's rows and those of other
/// spans between them, and keeps those that closed within the span's times.
pub(crate) const SPAN_SESSIONS: &str = "SELECT instance, id, peer, transport, opened, closed, bytes_in, bytes_out, msgs_in, msgs_out, reason
    FROM sessions WHERE instance = ? AND id BETWEEN ? AND ? AND closed BETWEEN ? AND ?
    ORDER BY closed DESC, id DESC LIMIT ?";

/// How the store writer adds a [`SessionSpan`] (instance, ids from, to, closed from, to).
pub(crate) const INSERT_SESSION_SPAN: &str =
    "INSERT INTO session_spans (instance, first_id, last_id, first_closed, last_closed)
    VALUES (?, ?, ?, ?, ?)";

/// The servers behind [`Store::stats`], in order of start: instance, model, address, written,
/// spooled, waited, dropped.
pub(crate) const STATS_SERVERS: &str =
    "SELECT instance, model, address, written, spooled, waited, dropped FROM servers ORDER BY started, instance";

/// The sessions behind [`Store::stats`], in one pass over the table (it is read whole: an
/// aggregate of every row): per instance and close reason, how many, their bytes in and out,
/// and their messages.
pub(crate) const STATS_SESSIONS: &str = "SELECT instance, reason, COUNT(*), CAST(SUM(bytes_in) AS SIGNED),
    CAST(SUM(bytes_out) AS SIGNED), CAST(SUM(msgs_in) AS SIGNED) FROM sessions GROUP BY instance, reason";

/// The records dropped, over every server: `CAST` so both backends return an integer.
pub(crate) const DROPPED: &str = "SELECT CAST(COALESCE(SUM(dropped), 0) AS SIGNED) FROM servers";

/// Questions of the kind the plan asks of its data, as SQL that runs as written on SQLite and
/// on MySQL/MariaDB (the book's store/sql.md shows them; a test runs each on both): what each asks, and
/// the statement.
pub const QUESTIONS: &[(&str, &str)] = &[
    (
        "busiest peers: sessions, messages and bytes per peer address",
        "SELECT peer, COUNT(*) AS sessions, SUM(msgs_in) AS messages, SUM(bytes_in + bytes_out) AS bytes
FROM sessions GROUP BY peer ORDER BY messages DESC, peer LIMIT 10",
    ),
    (
        "bytes per minute: bytes in and out, by the minute connections closed",
        "SELECT closed - closed % 60000000 AS minute_us, SUM(bytes_in) AS bytes_in, SUM(bytes_out) AS bytes_out
FROM sessions GROUP BY minute_us ORDER BY minute_us",
    ),
    (
        "slowest sessions: the longest connections, in microseconds",
        "SELECT instance, id, peer, closed - opened AS us, msgs_in
FROM sessions ORDER BY us DESC, instance, id LIMIT 10",
    ),
    (
        "close reasons over time: how connections ended, minute by minute",
        "SELECT closed - closed % 60000000 AS minute_us, reason, COUNT(*) AS sessions
FROM sessions GROUP BY minute_us, reason ORDER BY minute_us, reason",
    ),
    (
        "messages per session: which connections said most (with --record messages)",
        "SELECT instance, session, COUNT(*) AS messages, SUM(LENGTH(request)) AS request_bytes
FROM messages GROUP BY instance, session ORDER BY messages DESC, session DESC LIMIT 10",
    ),
];
