//! The sans-IO parts at their own speed, without a socket: each framing finding frames in a
//! buffer of many small messages, and a session answering a stream of them (codec, service and
//! reply framing together). `cargo bench` measures; `cargo test` runs each once, in criterion's
//! test mode, so CI knows they build and work without a release build of their own.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use switchboard::codec::Framing;
use switchboard::service::{Peer, Service, Upper};
use switchboard::Session;

/// 1,000 messages of `size` lower-case bytes, framed by `framing`, as one stream.
fn stream(framing: Framing, size: usize) -> Vec<u8> {
    let codec = framing.codec(1 << 20);
    let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut out = Vec::new();
    for _ in 0..1000 {
        codec.encode(&body, &mut out).unwrap();
    }
    out
}

/// Frames per second: how fast each framing finds the frames of a buffer.
fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("frames");
    for framing in [Framing::Line, Framing::Len] {
        for size in [64, 4096] {
            let bytes = stream(framing, size);
            group.throughput(Throughput::Elements(1000));
            group.bench_with_input(
                BenchmarkId::new(framing.name(), size),
                &bytes,
                |b, bytes| {
                    let mut codec = framing.codec(1 << 20);
                    b.iter(|| {
                        let mut at = 0;
                        while let Some(frame) = codec.frame(&bytes[at..]).unwrap() {
                            black_box(&frame.body);
                            at += frame.len;
                        }
                    })
                },
            );
        }
    }
    group.finish();
}

/// A session's bytes per second: a read of many messages answered and its replies written.
fn session(c: &mut Criterion) {
    let mut group = c.benchmark_group("session");
    for framing in [Framing::Raw, Framing::Line, Framing::Len] {
        for size in [64, 4096] {
            let bytes = stream(framing, size);
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            group.bench_with_input(
                BenchmarkId::new(framing.name(), size),
                &bytes,
                |b, bytes| {
                    let mut s =
                        Session::new(framing.codec(1 << 20), Upper.open(&Peer::new(1, "bench")))
                            .with_output_budget(usize::MAX >> 1);
                    b.iter(|| {
                        // In reads of 64 KiB, as a reactor's buffer takes them.
                        for read in bytes.chunks(64 * 1024) {
                            s.receive(read).unwrap();
                            let n = s.pending().len();
                            black_box(s.pending());
                            s.advance(n);
                        }
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, framing, session);
criterion_main!(benches);
