//! The trace's decoder on any bytes as a captured frame, and on every cut of them: it never
//! panics, what it decodes lies within the frame, and a frame cut short says where it stopped
//! or decodes no more than the whole one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::trace::{decode, Conversation};

fuzz_target!(|data: &[u8]| {
    let whole = decode(data, data.len(), 0);
    assert!(whole.payload.len() <= data.len());
    let mut conversation = Conversation::default();
    conversation.note(&whole);
    if let Some((&cut, _)) = data.split_first() {
        let cut = cut as usize % (data.len() + 1);
        let part = decode(&data[..cut], data.len(), 0);
        assert!(part.payload.len() <= cut);
        conversation.note(&part);
    }
    let _ = switchboard::trace::render(&[switchboard::trace::Event::Packet {
        note: conversation.note(&whole),
        packet: Box::new(whole),
    }]);
});
