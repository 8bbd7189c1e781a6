//! A reader that stops early (`tenant-reconcile show | head -1`) closes our stdout: the
//! command then ends as `ls` or `git log` do, killed quietly by SIGPIPE, not with a panic
//! and exit 101. SIGPIPE itself stays ignored (Rust's default), so a hook that exits
//! without reading its stdin, or a server closing its socket, is an error like any other.

/// Makes printing to a closed stdout end the process quietly, wherever it happens: print
/// macros panic on a write error, and the panic is turned into the quiet end.
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && stdout_closed() {
            end();
        }
        default(info)
    }));
}

/// Whether an error a command returned is a write to our closed stdout.
pub fn is_closed_stdout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    }) && stdout_closed()
}

/// Whether the reading end of our stdout is gone: poll says so with POLLERR on a pipe
/// (POLLHUP on some kernels' sockets).
fn stdout_closed() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready == 1 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Ends the process as the signal would have: by SIGPIPE, with nothing printed.
pub fn end() -> ! {
    // SAFETY: restoring the default action and raising the signal in this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(141)
}
