//! Attestation of the process behind a loopback TCP connection.
//!
//! The kernel gives no peer credentials for TCP, so the proxy finds the client's socket in
//! `/proc/net/tcp` or `/proc/net/tcp6` by its (local, remote) address pair, which yields the
//! socket's inode and owner uid. Every process with a file descriptor for that inode
//! (`/proc/<pid>/fd/* -> socket:[inode]`) is then attested as on the Unix sockets: executable
//! path and SHA-256, start time before the accept and unchanged while reading.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mayfly_server::evidence::unix::{ExecutableHasher, PeerAtAccept, attest};

/// Failures to attest a connection's process.
#[derive(Debug, thiserror::Error)]
pub enum TcpPeerError {
    /// No socket with this address pair is in `/proc/net/tcp` or `/proc/net/tcp6`.
    #[error("no socket from {peer} to {local} in /proc/net/tcp or /proc/net/tcp6")]
    SocketNotFound { peer: SocketAddr, local: SocketAddr },
    /// No process has the socket open: it exited, or the agent may not read its file descriptors.
    #[error(
        "no process holds the socket of {peer} (inode {inode}): it exited, or the agent cannot read /proc/<pid>/fd of its user"
    )]
    NoProcess { peer: SocketAddr, inode: u64 },
    /// Processes with different attributes hold the socket.
    #[error(
        "processes {pids:?} with different attributes hold the socket of {peer}: the caller is ambiguous"
    )]
    Ambiguous { peer: SocketAddr, pids: Vec<i32> },
    /// Reading `/proc` or attesting a process failed.
    #[error("attestation of the process behind {peer} failed: {reason}")]
    Attestation { peer: SocketAddr, reason: String },
}

/// Attests the process that owns the client end of the TCP connection from `peer` to `local`
/// (the proxy's address). `accepted_at_ticks` is the time of the accept, for the PID-reuse check.
pub fn attest_tcp_peer(
    peer: SocketAddr,
    local: SocketAddr,
    accepted_at_ticks: Option<u64>,
    hasher: &ExecutableHasher,
) -> Result<BTreeMap<String, Vec<String>>, TcpPeerError> {
    let (inode, uid) =
        find_socket(peer, local).ok_or(TcpPeerError::SocketNotFound { peer, local })?;
    let pids = processes_holding(inode, uid);
    if pids.is_empty() {
        return Err(TcpPeerError::NoProcess { peer, inode });
    }

    let mut attested: Vec<(i32, BTreeMap<String, Vec<String>>)> = Vec::new();
    for pid in &pids {
        let gid = effective_gid(*pid).map_err(|reason| TcpPeerError::Attestation {
            peer,
            reason: format!("reading /proc/{pid}/status: {reason}"),
        })?;
        let at_accept = PeerAtAccept {
            pid: Some(*pid),
            uid,
            gid,
            accepted_at_ticks,
        };
        let attributes = attest(at_accept, hasher).map_err(|error| TcpPeerError::Attestation {
            peer,
            reason: error.to_string(),
        })?;
        attested.push((*pid, attributes));
    }

    // Processes that share a socket (a parent and the child it forked, say) are one caller
    // only when everything but the pid agrees.
    let without_pid = |attributes: &BTreeMap<String, Vec<String>>| {
        let mut attributes = attributes.clone();
        attributes.remove("pid");
        attributes
    };
    let first = without_pid(&attested[0].1);
    if attested
        .iter()
        .any(|(_, attributes)| without_pid(attributes) != first)
    {
        return Err(TcpPeerError::Ambiguous { peer, pids });
    }
    Ok(attested.swap_remove(0).1)
}

/// Finds the socket whose local address is `peer` and remote address is `local` (the client's
/// side of the connection) and returns its inode and owner uid.
fn find_socket(peer: SocketAddr, local: SocketAddr) -> Option<(u64, u32)> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        if let Some(found) = find_in_table(&text, peer, local) {
            return Some(found);
        }
    }
    None
}

/// Searches one `/proc/net/tcp*` table. Its columns are `sl local_address rem_address st
/// tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...`, with addresses in hex.
pub(crate) fn find_in_table(text: &str, peer: SocketAddr, local: SocketAddr) -> Option<(u64, u32)> {
    for line in text.lines().skip(1) {
        let columns: Vec<&str> = line.split_whitespace().collect();
        if columns.len() < 10 {
            continue;
        }
        let (Some(from), Some(to)) = (parse_address(columns[1]), parse_address(columns[2])) else {
            continue;
        };
        if same_endpoint(from, peer) && same_endpoint(to, local) {
            let uid = columns[7].parse().ok()?;
            let inode = columns[9].parse().ok()?;
            // Inode 0 is a socket that is closing and belongs to no process.
            if inode != 0 {
                return Some((inode, uid));
            }
        }
    }
    None
}

/// Compares endpoints, treating an IPv4-mapped IPv6 address as its IPv4 address.
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

/// Parses `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6). The kernel prints each
/// 32-bit word of the address in host byte order.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match address.len() {
        8 => {
            let word = u32::from_str_radix(address, 16).ok()?;
            IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes()))
        }
        32 => {
            let mut octets = [0u8; 16];
            for index in 0..4 {
                let word = u32::from_str_radix(&address[index * 8..index * 8 + 8], 16).ok()?;
                octets[index * 4..index * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Lists the processes owned by `uid` with a file descriptor for socket `inode`. Processes of
/// other users are skipped without reading their descriptors: a socket's owner is the user that
/// created it, and a process that received it from another user is rare.
fn processes_holding(inode: u64, uid: u32) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;

    let wanted = format!("socket:[{inode}]");
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        if entry.metadata().map(|metadata| metadata.uid()).ok() != Some(uid) {
            continue;
        }
        let Ok(descriptors) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = descriptors.flatten().any(|descriptor| {
            std::fs::read_link(descriptor.path())
                .is_ok_and(|target| target.as_os_str() == wanted.as_str())
        });
        if holds {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// Reads the effective gid from the `Gid:` line of `/proc/<pid>/status`.
fn effective_gid(pid: i32) -> Result<u32, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| error.to_string())?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Gid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|gid| gid.parse().ok())
        .ok_or_else(|| "no Gid line".to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 11111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 22222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  0        0 33333 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn table_lookup_finds_client_side() {
        let peer: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(find_in_table(TABLE, peer, local), Some((22222, 1000)));
    }

    #[test]
    fn table_lookup_misses_other_port() {
        let peer: SocketAddr = "127.0.0.1:54322".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(find_in_table(TABLE, peer, local), None);
    }

    #[test]
    fn ipv6_mapped_address_matches_ipv4() {
        let table = "header
   0: 0000000000000000FFFF00000100007F:D431 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 44444 1
";
        let peer: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(find_in_table(table, peer, local), Some((44444, 1000)));
    }

    #[test]
    fn own_connection_attests_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, peer) = listener.accept().unwrap();
        let local = server_side.local_addr().unwrap();
        let hasher = ExecutableHasher::new(1024 * 1024 * 1024);
        let attributes = attest_tcp_peer(
            peer,
            local,
            mayfly_server::evidence::unix::uptime_ticks(),
            &hasher,
        )
        .unwrap();
        assert_eq!(
            attributes["pid"],
            vec![std::process::id().to_string()],
            "{attributes:?}"
        );
        drop(client);
    }
}
