//! A shard group's name: one database (a primary and its replicas) that holds the users of
//! the slots the shard map gives it, and of the users pinned to it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A shard group name: 1 to 32 lowercase letters, digits and `-`, starting with a letter or a
/// digit (`s1`, `shard-2`, `celebrity-7`). Names appear in keys, file names and logs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ShardGroup(String);

/// A name that is not a shard group name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a shard group name: {reason}")]
pub struct BadGroupName {
    pub name: String,
    pub reason: &'static str,
}

/// The longest name.
pub const MAX_GROUP_NAME: usize = 32;

impl ShardGroup {
    /// Parses a name, refusing with the reason one that is not.
    pub fn parse(name: &str) -> Result<Self, BadGroupName> {
        let bad = |reason| BadGroupName {
            name: name.to_string(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("it is empty; name it like s1 or shard-2"));
        }
        if name.len() > MAX_GROUP_NAME {
            return Err(bad("it is longer than 32 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad("use only lowercase letters, digits and '-'"));
        }
        if name.starts_with('-') {
            return Err(bad("it must start with a letter or a digit"));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShardGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ShardGroup {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        ShardGroup::parse(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_short_lowercase_identifiers() {
        for good in ["s1", "shard-2", "celebrity-7", "0", &"a".repeat(32)] {
            assert!(ShardGroup::parse(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("S1", "lowercase"),
            ("s_1", "lowercase"),
            ("-s1", "start with"),
            (&"a".repeat(33), "longer than 32"),
        ] {
            let e = ShardGroup::parse(bad).expect_err("refused");
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }
}
