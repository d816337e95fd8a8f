//! Connections on the agent's Unix socket, with the peer's credentials captured at accept time
//! for the Unix attestation (SO_PEERCRED, `/proc` and the PID-reuse check of
//! `mayfly_server::evidence::unix`).

use std::pin::Pin;
use std::task::{Context, Poll};

use mayfly_server::evidence::unix::{PeerAtAccept, uptime_ticks};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::Connected;

use crate::authority::AuthorityFilter;

/// A connection on the agent socket and its peer as the kernel reported it at accept time.
pub struct PeerStream {
    inner: UnixStream,
    peer: Option<PeerAtAccept>,
    authority: AuthorityFilter,
}

impl PeerStream {
    /// Records the peer's credentials and the accept time. A peer whose credentials the
    /// kernel does not give is kept without them, and every request on it is rejected.
    pub fn accept(inner: UnixStream) -> PeerStream {
        let accepted_at_ticks = uptime_ticks();
        let peer = inner.peer_cred().ok().map(|credentials| PeerAtAccept {
            pid: credentials.pid(),
            uid: credentials.uid(),
            gid: credentials.gid(),
            accepted_at_ticks,
        });
        PeerStream {
            inner,
            peer,
            authority: AuthorityFilter::default(),
        }
    }
}

/// The peer of a request, put into the request's extensions by tonic.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<PeerAtAccept>);

impl Connected for PeerStream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        Peer(self.peer)
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.authority.rewrite(&mut buf.filled_mut()[before..]);
        }
        polled
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
