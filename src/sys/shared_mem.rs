//! Memory shared with forked processes (`MAP_SHARED`), for the totals every worker counts into.

use std::io;

/// A value in memory shared with every process forked after it is made (`MAP_SHARED`), so the
/// workers of the process models count into the same counters. `T` must be plain data: atomics,
/// no pointers (a pointer would mean different things in different processes).
pub(crate) struct SharedMem<T> {
    ptr: std::ptr::NonNull<T>,
}

// SAFETY: the memory is only ever reached through `&T`, so sharing it is as safe as sharing `T`.
unsafe impl<T: Sync> Send for SharedMem<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for SharedMem<T> {}

impl<T: Default + Sync> SharedMem<T> {
    pub(crate) fn new() -> io::Result<Self> {
        let len = std::mem::size_of::<T>().max(1);
        // SAFETY: an anonymous mapping takes no fd or address of ours; failure is MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(p.cast::<T>()).ok_or_else(io::Error::last_os_error)?;
        // SAFETY: the mapping is fresh, page-aligned (so aligned for T) and at least T's size.
        unsafe { ptr.as_ptr().write(T::default()) };
        Ok(SharedMem { ptr })
    }
}

impl<T> std::ops::Deref for SharedMem<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: initialised in `new`, mapped until drop, and only shared as `&T`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Drop for SharedMem<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; T is plain data with nothing to drop.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), std::mem::size_of::<T>().max(1)) };
    }
}
