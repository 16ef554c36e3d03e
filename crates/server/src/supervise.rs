//! Keeps a node (the embedded server, or a cluster's storage node) serving
//! through storage failures.
//!
//! When the node's WAL or its state-machine store fails to write (a full
//! disk, an I/O error, a failed fsync), the node is not trusted to go on:
//! after a failed `fdatasync` nobody knows what reached the disk, and
//! retrying it as if the data were safe is the mistake PostgreSQL learned
//! from in 2018. So, as PostgreSQL does, the node crashes on purpose and
//! recovers from its log: the process re-executes itself (same PID, same
//! arguments), which is exactly a kill -9 and a restart, the path the crash
//! tests exercise. Recovery cuts a torn WAL tail, replays the log above the
//! store's applied index, and every acknowledged write (fsynced before it
//! was acknowledged) is there again.
//!
//! Why not reopen the storage inside the process: measured on a full
//! tmpfs, sled 0.34's I/O thread blocks for good in a flush after ENOSPC
//! and keeps the store's file lock, so the same process can never open the
//! directory again. A new process image drops every thread and descriptor.
//!
//! The re-executed process knows it is recovering (the environment variable
//! [`RECOVERING_ENV`] carries the reason): it serves HTTP at once, `/`
//! (liveness) up, `/ready` 503 with the reason and every API request a
//! retryable ServiceUnavailable, while it opens the node, again and again
//! with backoff while that fails (the disk may still be full; a failed
//! start changes nothing on disk), and serves normally once it opens. So
//! writes resume on their own once space returns. A first start, not a
//! recovery, still fails at once with the error, as an operator expects.
//!
//! A cluster's storage node does the same without the HTTP part: while it
//! recovers, its replicas are simply absent and the other zones keep
//! quorum; once it opens, it catches up from the leaders.
//!
//! The embedded server hands its listening socket to the new image
//! ([`LISTEN_FD_ENV`]): the socket stays open across the `exec`, so a client
//! connecting in the moment between the two images waits in the socket's
//! backlog and is answered by the new one, instead of being refused.
//!
//! An in-memory server is never re-executed: it would come back empty, a
//! silent reset no client should see. It stays not ready instead.

use dynaraft_cluster::host::Host;
use dynaraft_storage::StorageError;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Duration;

/// Set in the environment of a process re-executed after a storage
/// failure, to the failure it recovers from.
pub const RECOVERING_ENV: &str = "DYNARAFT_RECOVERING_FROM";
/// Set in the environment of a re-executed process to the number of the
/// descriptor of the listening socket it inherits.
pub const LISTEN_FD_ENV: &str = "DYNARAFT_LISTEN_FD";
/// How often the node's storage is checked for a failure, in milliseconds.
pub const STORAGE_CHECK_MS: u64 = 200;
/// Pause before the first attempt to open a recovering node, in
/// milliseconds; it doubles after each failed attempt.
pub const REOPEN_FIRST_PAUSE_MS: u64 = 100;
/// Longest pause between two attempts to open, in milliseconds.
pub const REOPEN_MAX_PAUSE_MS: u64 = 2_000;

/// The failure this process was re-executed to recover from, if it was.
pub fn recovering_from() -> Option<String> {
    std::env::var(RECOVERING_ENV).ok()
}

/// Runs until `stop` resolves. When `host`'s storage fails first, calls
/// `down` with the reason and re-executes the process (which does not
/// return) if `durable`, handing `socket` (a listening socket) to the new
/// image; a node without durable storage, or one that could not
/// re-execute, stays down until `stop`.
pub async fn watch(
    host: &Host,
    durable: bool,
    socket: Option<&TcpListener>,
    down: impl FnOnce(String),
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let why = tokio::select! {
        why = failure(host) => why,
        _ = &mut stop => return,
    };
    tracing::error!(error = %why, "storage failed; the node restarts and recovers from its log");
    down(format!("storage failed ({why}); recovering from the log"));
    if durable {
        let e = reexec(&why, socket);
        tracing::error!(error = %e, "could not re-execute; the node stays not ready");
    } else {
        tracing::error!("an in-memory node cannot recover its data; it stays not ready");
    }
    stop.await
}

/// The listening socket handed over by the image this process replaced
/// (see [`LISTEN_FD_ENV`]), if it was handed one listening on `addr`'s port;
/// else `addr` bound afresh.
pub async fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    if recovering_from().is_some()
        && let Some(fd) = std::env::var(LISTEN_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<RawFd>().ok())
    {
        match inherited(fd, addr) {
            Ok(l) => return Ok(l),
            Err(e) => tracing::warn!(fd, error = %e, "inherited socket not usable; binding afresh"),
        }
    }
    tokio::net::TcpListener::bind(addr).await?.into_std()
}

/// Takes descriptor `fd` as the listening socket on `addr`, once it is
/// known to be one: a listening socket (`SO_ACCEPTCONN`) whose port is
/// `addr`'s. It is close-on-exec again afterwards, like every other.
fn inherited(fd: RawFd, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `listening`; an fd
    // that is not an open socket makes it fail with EBADF or ENOTSOCK.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if listening == 0 {
        return Err(std::io::Error::other("not a listening socket"));
    }
    set_close_on_exec(fd, true)?;
    // SAFETY: the descriptor is an open listening socket that nothing else
    // in this process image owns: it was inherited across the exec, and
    // only this function, called once at start-up, takes it.
    let socket = unsafe { TcpListener::from_raw_fd(fd) };
    let port = socket.local_addr()?.port();
    if addr.port() != 0 && port != addr.port() {
        return Err(std::io::Error::other(format!(
            "it listens on port {port}, not {}",
            addr.port()
        )));
    }
    Ok(socket)
}

fn set_close_on_exec(fd: RawFd, on: bool) -> std::io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD only read and set the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `start` until it succeeds (a recovering node opening while its
/// disk may still be full), calling `failed` after each failure and
/// pausing with backoff; `None` once `stop` resolves.
pub async fn retry<T, F, Fut>(
    mut start: F,
    mut failed: impl FnMut(&StorageError),
    stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StorageError>>,
{
    let mut pause_ms = REOPEN_FIRST_PAUSE_MS;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(pause_ms)) => {}
            _ = stop.as_mut() => return None,
        }
        match start().await {
            Ok(started) => {
                tracing::info!("storage recovered; serving again");
                return Some(started);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = pause_ms, "the node did not open yet");
                failed(&e);
                pause_ms = (pause_ms * 2).min(REOPEN_MAX_PAUSE_MS);
            }
        }
    }
}

/// Resolves with the reason once the node's storage has failed.
async fn failure(host: &Host) -> String {
    loop {
        if let Some(why) = host.storage_failure() {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(STORAGE_CHECK_MS)).await;
    }
}

/// Replaces this process with a fresh run of its own binary and arguments,
/// marked as recovering from `why`, handing it `socket`. Returns only if
/// that failed.
fn reexec(why: &str, socket: Option<&TcpListener>) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    // /proc/self/exe runs this very binary even if its file was replaced.
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.args(std::env::args_os().skip(1))
        .env(RECOVERING_ENV, why)
        .env_remove(LISTEN_FD_ENV);
    if let Some(socket) = socket {
        let fd = socket.as_raw_fd();
        match set_close_on_exec(fd, false) {
            Ok(()) => {
                cmd.env(LISTEN_FD_ENV, fd.to_string());
            }
            Err(e) => {
                tracing::warn!(error = %e, "the listening socket is not handed over; the new image binds again");
            }
        }
    }
    cmd.exec()
}
