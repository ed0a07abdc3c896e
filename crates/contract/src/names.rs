//! The naming rule shared by host and node: cluster and node names are
//! DNS-1123 labels, parsed into [`ClusterName`] and [`NodeName`] wherever a
//! name enters (a cluster file, a flag, `cluster.json`, a machine or client
//! config, an API path). A value of these types cannot be a path, empty, or
//! start with `-`.

use std::fmt;
use std::str::FromStr;

/// The rule every cluster and node name follows, in words (for help texts and
/// the command line's refusals).
pub const NAME_RULE: &str = "names are DNS-1123 labels: lower-case letters, digits and '-', starting with a letter and ending with a letter or digit, at most 63 characters (cluster names: 32)";

/// The most characters of a user's value quoted back in a message; longer
/// values are cut (see [`clip`]) so that a diagnostic stays readable whatever
/// the input.
pub const MAX_QUOTED_CHARS: usize = 64;

/// `s` as quoted in a message: unchanged when short, else its first
/// [`MAX_QUOTED_CHARS`] characters, an ellipsis and its full length in bytes.
pub fn clip(s: &str) -> String {
    clip_to(s, MAX_QUOTED_CHARS)
}

/// `s` cut to its first `max` characters (see [`clip`]).
pub fn clip_to(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &s[..cut], s.len()),
    }
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {len} characters long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    /// `name` is the value as given, cut to [`MAX_QUOTED_CHARS`] (see [`clip`]).
    #[error(
        "name {name:?} is not a DNS-1123 label: use lower-case letters, digits and '-', starting with a letter and ending with a letter or digit"
    )]
    NotDns1123 { name: String },
}

fn check_dns1123_label(s: &str, max: usize) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > max {
        return Err(NameError::TooLong { len: s.len(), max });
    }
    let bytes = s.as_bytes();
    let ok_inner = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let first_ok = bytes[0].is_ascii_lowercase();
    let last = bytes[bytes.len() - 1];
    let last_ok = last.is_ascii_lowercase() || last.is_ascii_digit();
    if ok_inner && first_ok && last_ok {
        Ok(())
    } else {
        Err(NameError::NotDns1123 { name: clip(s) })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        /// As the quoted text (messages write names with `{:?}`).
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.0.as_str(), f)
            }
        }

        impl $name {
            /// The longest name accepted.
            pub const MAX_LEN: usize = $max;
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                check_dns1123_label(s, $max)?;
                Ok($name(s.to_string()))
            }
        }

        impl fmt::Display for $name {
            // `pad`, not `write_str`: widths and alignment (`{:<18}` in
            // `status`'s table) apply as they do to a `str`.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Read-only views as `str`: the name can be used wherever text is
        // expected, and it cannot be changed into a bad value through them.
        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A cluster's name: a DNS-1123 label of at most 32 characters (it becomes part
    /// of node names, socket paths and certificate subjects).
    ClusterName,
    32
);
name_type!(
    /// A node's name: a DNS-1123 label (at most 63 characters); also its hostname.
    NodeName,
    63
);

name_type!(
    /// A supervised service's name on a node (`etcd`, `containerd`): a
    /// DNS-1123 label. What a node API path may name (`/v1/services/{name}/...`);
    /// the same rule on the host (`ironclad logs`) and in apid's router.
    ServiceName,
    63
);

/// The cluster name when the cluster file does not give one.
pub const DEFAULT_CLUSTER_NAME: &str = "ironclad";

impl Default for ClusterName {
    /// [`DEFAULT_CLUSTER_NAME`] (checked by a unit test to be a valid name).
    fn default() -> Self {
        ClusterName(DEFAULT_CLUSTER_NAME.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_take_widths_like_text() {
        let n: NodeName = "dev-cp-1".parse().unwrap();
        assert_eq!(format!("[{n:<10}]"), "[dev-cp-1  ]");
        assert_eq!(format!("[{n:>10}]"), "[  dev-cp-1]");
        let c: ClusterName = "dev".parse().unwrap();
        assert_eq!(format!("[{c:5}]"), "[dev  ]");
        assert_eq!(c.to_string(), "dev");
    }

    #[test]
    fn names_follow_dns1123() {
        assert!("dev-cp-1".parse::<NodeName>().is_ok());
        assert!("Dev".parse::<NodeName>().is_err());
        assert!("-a".parse::<NodeName>().is_err());
        assert!("a-".parse::<NodeName>().is_err());
        assert!("1a".parse::<NodeName>().is_err());
        assert!("a_b".parse::<NodeName>().is_err());
        assert!("".parse::<NodeName>().is_err());
        assert!("a".repeat(33).parse::<ClusterName>().is_err());
        assert!("a".repeat(63).parse::<NodeName>().is_ok());
        for ok in ["etcd", "containerd", "kube-apiserver"] {
            assert_eq!(&*ok.parse::<ServiceName>().unwrap(), ok);
        }
        for bad in ["../x", "", "Etcd", "etcd.log", "a/b", "x_y", "%2e%2e"] {
            assert!(bad.parse::<ServiceName>().is_err(), "{bad}");
        }
        assert_eq!(
            DEFAULT_CLUSTER_NAME.parse::<ClusterName>().unwrap(),
            ClusterName::default()
        );
    }

    #[test]
    fn names_that_are_paths_are_refused() {
        for bad in [
            "", ".", "..", "/etc", "a/b", "../../x", "-x", "a\0b", "a\nb", "dev/",
        ] {
            assert!(bad.parse::<ClusterName>().is_err(), "{bad:?}");
            assert!(bad.parse::<NodeName>().is_err(), "{bad:?}");
        }
        let n: ClusterName = "dev".parse().unwrap();
        // Read as text, printed and debugged as the text itself.
        assert_eq!(&*n, "dev");
        assert_eq!(format!("{n} {n:?}"), "dev \"dev\"");
        // Serde refuses a bad name in a document.
        assert!(serde_json::from_str::<NodeName>("\"../x\"").is_err());
        assert_eq!(
            serde_json::from_str::<NodeName>("\"cp-1\"").unwrap(),
            "cp-1"
        );
    }

    #[test]
    fn quoted_values_are_cut() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(10_000);
        let c = clip(&long);
        assert!(c.starts_with(&"é".repeat(MAX_QUOTED_CHARS)), "{c}");
        assert!(c.ends_with("… (20000 bytes)"), "{c}");
        let e = "x_".repeat(500_000).parse::<NodeName>().unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
    }
}
