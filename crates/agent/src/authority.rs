//! Rewrites the percent signs of an HTTP/2 `:authority` value that gRPC C-core clients send on
//! Unix sockets, so the HTTP/2 server accepts their requests.
//!
//! grpc-python and other gRPC C-core clients (seen with grpc-python 1.85) send the socket path
//! as `:authority`, percent-encoded, such as `tmp%2Fagent.sock`. The `h2` crate that tonic uses
//! rejects a `%` in the host part of an authority and resets the stream with PROTOCOL_ERROR, so
//! py-spiffe could not call the agent at all. The authority means nothing on a Unix socket, so
//! this filter replaces each `%` in it with `-`, which keeps every length the same: no frame or
//! HPACK length changes.
//!
//! The filter recognizes the value only where it is sent as a literal with the name `:authority`
//! spelled out and without Huffman coding, which is how C-core sends it. Other encodings pass
//! unchanged.
//! NOTE: the filter scans every byte of the connection, so the same byte pattern inside a
//! message would be rewritten too. That needs the bytes `:authority`, then a length byte, then a
//! value with `%` in a Workload API message, which no field of the API carries.

const NAME: &[u8] = b":authority";

/// Streaming state of the filter; it persists across reads, so a value split between two reads
/// is still rewritten.
#[derive(Debug, Default)]
pub struct AuthorityFilter {
    /// Number of bytes of `NAME` matched so far.
    matched: usize,
    /// Whether the next byte is the value's length prefix.
    expect_length: bool,
    /// Bytes of the value still to come.
    value_left: usize,
}

impl AuthorityFilter {
    /// Rewrites `bytes`, the next bytes read from the connection, in place.
    pub fn rewrite(&mut self, bytes: &mut [u8]) {
        for byte in bytes.iter_mut() {
            if self.value_left > 0 {
                if *byte == b'%' {
                    *byte = b'-';
                }
                self.value_left -= 1;
                continue;
            }
            if self.expect_length {
                self.expect_length = false;
                // The high bit marks Huffman coding, and 0x7f starts a multi-byte length.
                if *byte & 0x80 == 0 && *byte < 0x7f {
                    self.value_left = usize::from(*byte);
                    continue;
                }
            }
            if *byte == NAME[self.matched] {
                self.matched += 1;
                if self.matched == NAME.len() {
                    self.matched = 0;
                    self.expect_length = true;
                }
            } else {
                self.matched = usize::from(*byte == NAME[0]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_block(value: &[u8]) -> Vec<u8> {
        let mut block = vec![0x40, 0x0a];
        block.extend_from_slice(NAME);
        block.push(u8::try_from(value.len()).unwrap_or(0));
        block.extend_from_slice(value);
        block.extend_from_slice(b"\x83\x86");
        block
    }

    #[test]
    fn percent_in_authority_is_replaced() {
        let mut block = header_block(b"tmp%2Fagent.sock");
        AuthorityFilter::default().rewrite(&mut block);
        assert_eq!(block, header_block(b"tmp-2Fagent.sock"));
    }

    #[test]
    fn value_split_across_reads_is_replaced() {
        let block = header_block(b"run%2Fspire%2Fagent.sock");
        let mut filter = AuthorityFilter::default();
        let mut rewritten = Vec::new();
        for chunk in block.chunks(5) {
            let mut chunk = chunk.to_vec();
            filter.rewrite(&mut chunk);
            rewritten.extend(chunk);
        }
        assert_eq!(rewritten, header_block(b"run-2Fspire-2Fagent.sock"));
    }

    #[test]
    fn percent_outside_authority_is_kept() {
        let mut bytes = b"path\x05a%20b :authorit% x".to_vec();
        let original = bytes.clone();
        AuthorityFilter::default().rewrite(&mut bytes);
        assert_eq!(bytes, original);
    }

    #[test]
    fn huffman_coded_value_is_kept() {
        let mut block = vec![0x40, 0x0a];
        block.extend_from_slice(NAME);
        block.extend_from_slice(&[0x83, b'%', b'%', b'%']);
        let original = block.clone();
        AuthorityFilter::default().rewrite(&mut block);
        assert_eq!(block, original);
    }
}
