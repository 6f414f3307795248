//! CPU affinity: pinning a thread or a command to cores, and the cores this process may use.

use std::io;

/// Keeps the calling thread (and the threads and processes it starts afterwards) on `cpus`
/// (sched_setaffinity(2)), so a load generator and the server it measures do not share cores.
pub(crate) fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    pin(0, cpus)
}

/// Starts `command`'s process on `cpus` only: the affinity is set between fork and exec, so
/// every thread and process the program starts stays there too.
pub(crate) fn pin_command(command: &mut std::process::Command, cpus: Vec<usize>) {
    use std::os::unix::process::CommandExt;
    let set = cpu_set(&cpus);
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // sched_setaffinity system call on a set built before the fork: no allocation, no lock.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&cpu| cpu < libc::CPU_SETSIZE as usize) {
        // SAFETY: `cpu` is below CPU_SETSIZE, so the bit is inside the set.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

fn pin(pid: libc::pid_t, cpus: &[usize]) -> io::Result<()> {
    let set = cpu_set(cpus);
    // SAFETY: `set` is a live cpu_set_t of the size given; the kernel only reads it.
    if unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs this process may run on (sched_getaffinity(2)), in order.
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: as in `cpu_set`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live, writable cpu_set_t of the size given.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: every index is below CPU_SETSIZE; CPU_ISSET only reads the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}
