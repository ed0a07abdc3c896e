//! The frame encoding of QEMU's `-netdev stream` (and the older `-netdev
//! socket`) backend: each Ethernet frame is sent as a 4-byte big-endian length
//! followed by that many bytes (QEMU's `net/stream.c` writes `htonl(size)` then
//! the buffer, and reads the same). There is no other header and no handshake.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame QEMU sends on a stream netdev (its `NET_BUFSIZE`, 4 KiB of
/// headroom plus 64 KiB); a longer length means the peer is not speaking this
/// protocol.
pub const MAX_FRAME: usize = 4096 + 65536;
/// An Ethernet header: destination, source, EtherType.
pub const MIN_FRAME: usize = 14;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is larger than the maximum of {MAX_FRAME}")]
    TooLong(usize),
    #[error("I/O error on the frame stream: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame. `Ok(None)` on a clean end of stream between frames.
/// Frames shorter than an Ethernet header are returned as they are; the switch
/// counts and drops them.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLong(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Writes one frame (length prefix and bytes, in one write call).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> Result<(), FrameError> {
    if frame.len() > MAX_FRAME {
        return Err(FrameError::TooLong(frame.len()));
    }
    let mut buf = Vec::with_capacity(4 + frame.len());
    // Bounded by MAX_FRAME above, so the length fits in a u32.
    buf.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    buf.extend_from_slice(frame);
    w.write_all(&buf).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_frame(&mut a, b"0123456789abcdef").await.unwrap();
        write_frame(&mut a, &[]).await.unwrap();
        // A length prefix larger than any frame QEMU sends.
        a.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        assert_eq!(
            read_frame(&mut b).await.unwrap().unwrap(),
            b"0123456789abcdef"
        );
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), b"");
        assert!(matches!(
            read_frame(&mut b).await,
            Err(FrameError::TooLong(_))
        ));
        drop(a);
        assert!(read_frame(&mut b).await.unwrap().is_none());
        assert!(matches!(
            write_frame(&mut tokio::io::sink(), &vec![0; MAX_FRAME + 1]).await,
            Err(FrameError::TooLong(_))
        ));
    }

    #[tokio::test]
    async fn wire_format_is_big_endian_length_prefix() {
        let mut out = Vec::new();
        write_frame(&mut out, &[0xaa; 300]).await.unwrap();
        assert_eq!(&out[..4], &[0, 0, 1, 44]);
        assert_eq!(out.len(), 304);
    }
}
