//! The io_uring features the `uring` model uses where the kernel has them, each of which it can
//! be told to go without (`serve --uring NAME=off`): to measure what each is worth (`lab
//! --ablation`), or to run where the kernel has a feature but misbehaves with it.

use std::fmt;
use std::str::FromStr;

/// One io_uring feature of the `uring` model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UringFeature {
    /// IORING_SETUP_SINGLE_ISSUER (Linux 6.0): one thread submits, so the kernel skips the
    /// ring's lock.
    SingleIssuer,
    /// IORING_SETUP_DEFER_TASKRUN (6.1): completion work runs when the loop waits, in one
    /// batch, not as each packet arrives; needs single-issuer.
    DeferTaskrun,
    /// A registered ring fd (5.18): each io_uring_enter skips looking the ring's fd up.
    RegisteredRing,
    /// Registered files (a sparse table, 5.19): each connection's socket is put in the ring's
    /// own table once, and its receives and sends name it there, skipping a lookup in the
    /// process's file table (and its reference count) per operation.
    FixedFiles,
    /// Multishot receives (6.0; ended after a byte count, 6.17): one receive per connection
    /// serves message after message. Off: a receive submitted per message.
    MultishotRecv,
    /// Incremental provided buffers, IOU_PBUF_RING_INC (6.12): receives fill a buffer a piece
    /// at a time, so small messages share one buffer and a large one fills it whole.
    IncrementalBuffers,
    /// The replies to every completion of a turn leave in one send per connection, all
    /// submitted at the turn's end. Off: each completion's send is queued as it is handled.
    BatchedSends,
    /// IORING_SETUP_SQPOLL: a kernel thread polls the submission queue, so submitting is no
    /// system call. It takes a core (of two here), so it is off unless asked for.
    Sqpoll,
    /// IORING_OP_SEND_ZC (6.0): replies of 16 KiB or more on TCP are sent from our memory
    /// without copying it into the kernel, which pins its pages until a second completion says
    /// they are free. Off unless asked for: a peer on the same machine (loopback, a veth pair)
    /// gets a copy made anyway at delivery, so here it only adds the pinning.
    SendZc,
}

impl UringFeature {
    /// Every feature, in the order `--uring` lists them.
    pub const ALL: [UringFeature; 9] = [
        UringFeature::SingleIssuer,
        UringFeature::DeferTaskrun,
        UringFeature::RegisteredRing,
        UringFeature::FixedFiles,
        UringFeature::MultishotRecv,
        UringFeature::IncrementalBuffers,
        UringFeature::BatchedSends,
        UringFeature::Sqpoll,
        UringFeature::SendZc,
    ];

    /// The features off unless asked for (`--uring NAME=on`).
    pub const OFF_BY_DEFAULT: [UringFeature; 2] = [UringFeature::Sqpoll, UringFeature::SendZc];

    /// Its name on the command line (`multishot-recv`).
    pub fn name(self) -> &'static str {
        match self {
            UringFeature::SingleIssuer => "single-issuer",
            UringFeature::DeferTaskrun => "defer-taskrun",
            UringFeature::RegisteredRing => "registered-ring",
            UringFeature::FixedFiles => "fixed-files",
            UringFeature::MultishotRecv => "multishot-recv",
            UringFeature::IncrementalBuffers => "incremental-buffers",
            UringFeature::BatchedSends => "batched-sends",
            UringFeature::Sqpoll => "sqpoll",
            UringFeature::SendZc => "send-zc",
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for UringFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which [`UringFeature`]s the `uring` model may use. The default: every one but those
/// [off by default](UringFeature::OFF_BY_DEFAULT), `sqpoll` and `send-zc`.
/// A feature the kernel refuses is gone without, and the model's log says so once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UringFeatures(u16);

impl Default for UringFeatures {
    fn default() -> Self {
        UringFeature::ALL
            .iter()
            .filter(|f| !UringFeature::OFF_BY_DEFAULT.contains(f))
            .fold(UringFeatures(0), |all, &f| all.with(f, true))
    }
}

impl UringFeatures {
    /// None at all: io_uring as Linux 5.19 has it.
    pub fn none() -> Self {
        UringFeatures(0)
    }

    /// Whether `feature` is on.
    pub fn is_on(self, feature: UringFeature) -> bool {
        self.0 & feature.bit() != 0
    }

    /// The same, with `feature` on or off.
    pub fn with(self, feature: UringFeature, on: bool) -> Self {
        if on {
            UringFeatures(self.0 | feature.bit())
        } else {
            UringFeatures(self.0 & !feature.bit())
        }
    }
}

/// `single-issuer=on,multishot-recv=off,...`: every feature, as `--uring` takes them.
impl fmt::Display for UringFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = UringFeature::ALL
            .iter()
            .map(|&x| format!("{x}={}", if self.is_on(x) { "on" } else { "off" }))
            .collect();
        f.write_str(&all.join(","))
    }
}

impl fmt::Debug for UringFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Parses `NAME=on|off` pairs, comma-separated, over the default: `multishot-recv=off`.
impl FromStr for UringFeatures {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let names = || {
            UringFeature::ALL
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut features = UringFeatures::default();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                format!(
                    "'{pair}' is not NAME=on or NAME=off (features: {})",
                    names()
                )
            })?;
            let feature = UringFeature::ALL
                .into_iter()
                .find(|f| f.name() == name.trim())
                .ok_or_else(|| {
                    format!(
                        "no io_uring feature '{}' (features: {})",
                        name.trim(),
                        names()
                    )
                })?;
            let on = match value.trim() {
                "on" | "yes" | "true" | "1" => true,
                "off" | "no" | "false" | "0" => false,
                other => return Err(format!("'{other}' for {name}: say on or off")),
            };
            features = features.with(feature, on);
        }
        Ok(features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_over_the_default_and_prints_back() {
        let d = UringFeatures::default();
        assert!(d.is_on(UringFeature::MultishotRecv) && !d.is_on(UringFeature::Sqpoll));
        assert!(!d.is_on(UringFeature::SendZc));
        let f: UringFeatures = "multishot-recv=off, sqpoll=on".parse().unwrap();
        assert!(!f.is_on(UringFeature::MultishotRecv) && f.is_on(UringFeature::Sqpoll));
        assert!(
            f.is_on(UringFeature::DeferTaskrun),
            "the rest as by default"
        );
        assert_eq!(f.to_string().parse::<UringFeatures>().unwrap(), f);
        assert_eq!("".parse::<UringFeatures>().unwrap(), d);
    }

    #[test]
    fn a_wrong_name_or_value_says_what_is_right() {
        let e = "multishot=off".parse::<UringFeatures>().unwrap_err();
        assert!(
            e.contains("no io_uring feature 'multishot'") && e.contains("multishot-recv"),
            "{e}"
        );
        let e = "sqpoll=maybe".parse::<UringFeatures>().unwrap_err();
        assert!(e.contains("say on or off"), "{e}");
        let e = "sqpoll".parse::<UringFeatures>().unwrap_err();
        assert!(e.contains("NAME=on"), "{e}");
    }
}
