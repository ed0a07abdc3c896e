//! Serde for the host's newtypes that have one text form (a MAC address, a
//! byte size): written as their `Display` text and read back through their
//! `FromStr`, so a stored document is checked by the same parser as a flag
//! or a cluster file.

/// Implements `Serialize` (the `Display` text) and `Deserialize` (a string
/// parsed with `FromStr`, whose error becomes serde's message) for `$t`.
macro_rules! serde_as_text {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use serde_as_text;
