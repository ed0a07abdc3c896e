//! Newtypes for values from the cluster file, flags and API requests. Each one
//! validates in `FromStr`/`TryFrom` so the same rules apply wherever a value
//! enters. Names follow the rule shared with the node
//! ([`ironclad_contract::names`]).

pub use ironclad_contract::names::*;
use std::fmt;
use std::str::FromStr;

/// Why a size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("size is empty")]
    Empty,
    #[error("{0:?} is not a size: write a number and a unit, like 512MiB, 2GiB or 1G")]
    Malformed(String),
    #[error("unknown size unit {unit:?}: use B, K/KiB, M/MiB, G/GiB or T/TiB")]
    UnknownUnit { unit: String },
    #[error("size {0:?} is too large")]
    Overflow(String),
}

/// A size in bytes, written in the file as `512MiB`, `2GiB`, `1G` (binary units:
/// `G` and `GiB` both mean 2^30, as QEMU reads them) or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

impl ByteSize {
    pub const fn bytes(n: u64) -> Self {
        ByteSize(n)
    }
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024 * 1024)
    }
    pub fn as_u64(self) -> u64 {
        self.0
    }
    /// Whole MiB, rounded down (what QEMU's `-m` takes).
    pub fn as_mib(self) -> u64 {
        self.0 / (1024 * 1024)
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, SizeError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(SizeError::Empty);
        }
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        if digits_end == 0 {
            return Err(SizeError::Malformed(clip(s)));
        }
        let number: u64 = t[..digits_end]
            .parse()
            .map_err(|_| SizeError::Overflow(clip(s)))?;
        let unit = t[digits_end..].trim();
        let shift = match unit {
            "" | "B" => 0,
            "K" | "k" | "KiB" | "KB" => 10,
            "M" | "MiB" | "MB" => 20,
            "G" | "GiB" | "GB" => 30,
            "T" | "TiB" | "TB" => 40,
            _ => {
                return Err(SizeError::UnknownUnit { unit: clip(unit) });
            }
        };
        number
            .checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| SizeError::Overflow(clip(s)))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
        for (shift, unit) in UNITS {
            let div = 1u64 << shift;
            if self.0 >= div && self.0.is_multiple_of(div) {
                return write!(f, "{}{}", self.0 / div, unit);
            }
        }
        write!(f, "{}B", self.0)
    }
}

crate::serde_text::serde_as_text!(ByteSize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("512MiB".parse::<ByteSize>().unwrap(), ByteSize::mib(512));
        assert_eq!("2G".parse::<ByteSize>().unwrap(), ByteSize::gib(2));
        assert_eq!("1024".parse::<ByteSize>().unwrap(), ByteSize::bytes(1024));
        assert_eq!(ByteSize::gib(2).to_string(), "2GiB");
        assert_eq!(ByteSize::mib(1536).to_string(), "1536MiB");
        assert!(matches!(
            "12XB".parse::<ByteSize>(),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            "GiB".parse::<ByteSize>(),
            Err(SizeError::Malformed(_))
        ));
        assert!(matches!(
            "99999999999999T".parse::<ByteSize>(),
            Err(SizeError::Overflow(_))
        ));
    }

    #[test]
    fn size_errors_are_short() {
        let e = format!("1{}", "Q".repeat(100_000))
            .parse::<ByteSize>()
            .unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
    }
}
