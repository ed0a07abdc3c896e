//! Ethernet MAC addresses: a small value type shared by the switch (learning
//! table, fault targets) and the QEMU command-line builder (fixed NIC MACs).

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet address, printed as `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// Why a MAC address text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("MAC address {0:?} is not six ':'-separated hex octets (like 52:54:00:12:34:56)")]
    Syntax(String),
    #[error("MAC address {0} is a multicast address; a NIC needs a unicast one")]
    Multicast(MacAddr),
}

impl MacAddr {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// True for broadcast and multicast addresses (group bit set): frames to these
    /// are flooded.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Parses a MAC for a NIC: like [`FromStr`], but refuses group addresses.
    pub fn parse_unicast(s: &str) -> Result<Self, MacError> {
        let mac: MacAddr = s.parse()?;
        if mac.is_multicast() {
            return Err(MacError::Multicast(mac));
        }
        Ok(mac)
    }

    /// The destination address of an Ethernet frame, if the frame is long enough.
    pub fn dst_of(frame: &[u8]) -> Option<MacAddr> {
        frame.get(0..6).and_then(|b| b.try_into().ok()).map(MacAddr)
    }

    /// The source address of an Ethernet frame, if the frame is long enough.
    pub fn src_of(frame: &[u8]) -> Option<MacAddr> {
        frame
            .get(6..12)
            .and_then(|b| b.try_into().ok())
            .map(MacAddr)
    }
}

impl FromStr for MacAddr {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, MacError> {
        let bad = || MacError::Syntax(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

crate::serde_text::serde_as_text!(MacAddr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let mac: MacAddr = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(mac.0, [0x52, 0x54, 0x00, 0xab, 0xcd, 0x01]);
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:01");
        assert!(!mac.is_multicast());
        assert!(MacAddr::BROADCAST.is_multicast());
    }

    #[test]
    fn refuses_bad_text() {
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:01:02",
            "5:54:00:ab:cd:01",
            "zz:54:00:ab:cd:01",
            "52-54-00-ab-cd-01",
        ] {
            assert!(
                matches!(bad.parse::<MacAddr>(), Err(MacError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            MacAddr::parse_unicast("01:00:5e:00:00:01"),
            Err(MacError::Multicast(_))
        ));
    }

    #[test]
    fn reads_frame_addresses() {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
        frame.extend_from_slice(&[0x08, 0x06]);
        assert_eq!(MacAddr::dst_of(&frame), Some(MacAddr::BROADCAST));
        assert_eq!(
            MacAddr::src_of(&frame),
            Some(MacAddr([0x52, 0x54, 0, 0, 0, 1]))
        );
        assert_eq!(MacAddr::src_of(&frame[..8]), None);
    }
}
