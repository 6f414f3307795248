//! A buffer that reads land in, beginning on a memory page.

use std::ops::{Deref, DerefMut};

/// A memory page.
const PAGE: usize = 4096;

/// Zeroed bytes beginning on a page boundary, for the kernel to copy received bytes into. The
/// kernel's copy into memory that is not cache-line aligned runs at a fraction of its speed
/// on some processors (`rep movsb` on AMD EPYC: a read buffer 16 bytes past a cache line
/// halved `epoll`'s throughput at 100 x 64 KiB and made the copy 42% of its CPU, against
/// 10%), and the allocator promises only 16 bytes.
pub(crate) struct ReadBuffer {
    storage: Box<[u8]>,
    start: usize,
    len: usize,
}

impl ReadBuffer {
    /// `len` zeroed bytes, the first on a page boundary; none at all for 0.
    pub(crate) fn new(len: usize) -> Self {
        let storage = vec![0; if len == 0 { 0 } else { len + PAGE }].into_boxed_slice();
        let start = if len == 0 {
            0
        } else {
            storage.as_ptr().align_offset(PAGE)
        };
        ReadBuffer {
            storage,
            start,
            len,
        }
    }
}

impl Deref for ReadBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl DerefMut for ReadBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begins_on_a_page_and_holds_its_length() {
        for len in [1, 100, 64 * 1024] {
            let mut buf = ReadBuffer::new(len);
            assert_eq!(buf.as_ptr() as usize % PAGE, 0);
            assert_eq!(buf.len(), len);
            buf[len - 1] = 7;
            assert!(buf[..len - 1].iter().all(|&b| b == 0));
        }
        assert!(ReadBuffer::new(0).is_empty());
        assert_eq!(ReadBuffer::new(0).storage.len(), 0, "no memory for nothing");
    }
}
