//! Which servers the store can use: the version a server reports in `INFO server`, checked once
//! per connection before the connection takes any check.
//!
//! The scripts need Redis 6.2's commands and nothing newer (`PEXPIRE … GT` is done by hand in
//! ring.lua), and 6.2 is the oldest server the test suite runs them on. Valkey reports the Redis
//! version it is compatible with in `redis_version` (7.2.4 for every Valkey 8) and its own in
//! `valkey_version`, so the compatible version decides and the name and own version are for the
//! log.

use std::fmt;

/// The oldest Redis-compatible version the store uses.
pub const MINIMUM: Version = Version {
    major: 6,
    minor: 2,
    patch: 0,
};

/// A `major.minor.patch` version; missing parts read 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Version {
    /// `6.2.14`, `8.1`, `7`; anything after a `-` (a pre-release) is ignored. `None` when the
    /// major is not a number.
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text
            .trim()
            .split('-')
            .next()?
            .split('.')
            .map(str::parse::<u32>);
        let major = parts.next()?.ok()?;
        let mut next = || parts.next().and_then(Result::ok).unwrap_or(0);
        Some(Self {
            major,
            minor: next(),
            patch: next(),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A server as `INFO server` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `redis`, or what `server_name` says (`valkey`).
    pub name: String,
    /// The server's own version (`valkey_version` for Valkey).
    pub version: Version,
    /// The Redis version it is compatible with (`redis_version`): what decides.
    pub compatible: Version,
}

impl Server {
    /// Reads the `INFO server` reply; `None` without a readable `redis_version`.
    pub fn from_info(info: &str) -> Option<Self> {
        let field = |name: &str| {
            info.lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.trim())
        };
        let compatible = Version::parse(field("redis_version")?)?;
        let name = field("server_name").unwrap_or("redis").to_owned();
        let version = field(&format!("{name}_version"))
            .and_then(Version::parse)
            .unwrap_or(compatible);
        Some(Self {
            name,
            version,
            compatible,
        })
    }

    /// Whether the store may use it.
    pub fn is_supported(&self) -> bool {
        self.compatible >= MINIMUM
    }
}

/// `redis 6.2.14`, or `valkey 8.1.8 (redis 7.2.4)` when the two differ.
impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)?;
        if self.version != self.compatible {
            write!(f, " (redis {})", self.compatible)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    #[test]
    fn redis_6_2_is_the_oldest_supported() {
        let info = "# Server\r\nredis_version:6.2.14\r\nredis_git_sha1:40305114\r\nredis_mode:standalone\r\n";
        let server = Server::from_info(info).unwrap();
        assert_eq!(server.name, "redis");
        assert_eq!(server.version, v(6, 2, 14));
        assert_eq!(server.compatible, v(6, 2, 14));
        assert!(server.is_supported());
        assert_eq!(server.to_string(), "redis 6.2.14");

        for (old, version) in [("6.0.20", v(6, 0, 20)), ("5.0.14", v(5, 0, 14))] {
            let server = Server::from_info(&format!("redis_version:{old}\n")).unwrap();
            assert_eq!(server.version, version);
            assert!(!server.is_supported(), "{old}");
        }
        let newer = Server::from_info("redis_version:7.0.15\n").unwrap();
        assert!(newer.is_supported());
    }

    #[test]
    fn valkey_is_judged_by_the_redis_version_it_reports() {
        let info = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.8\r\nvalkey_release_stage:ga\r\n";
        let server = Server::from_info(info).unwrap();
        assert_eq!(server.name, "valkey");
        assert_eq!(server.version, v(8, 1, 8));
        assert_eq!(server.compatible, v(7, 2, 4));
        assert!(server.is_supported());
        assert_eq!(server.to_string(), "valkey 8.1.8 (redis 7.2.4)");
    }

    #[test]
    fn odd_versions_are_read_as_far_as_they_go() {
        assert_eq!(Version::parse("7.4"), Some(v(7, 4, 0)));
        assert_eq!(Version::parse("8"), Some(v(8, 0, 0)));
        assert_eq!(Version::parse("7.2.0-rc1"), Some(v(7, 2, 0)));
        assert_eq!(Version::parse(" 6.2.1 "), Some(v(6, 2, 1)));
        assert_eq!(Version::parse("unstable"), None);
        assert_eq!(Version::parse(""), None);
        // A value must be the whole field, not a prefix of another one.
        assert_eq!(Server::from_info("redis_version_x:9.0.0\n"), None);
        assert_eq!(
            Server::from_info("# Server\r\nredis_mode:standalone\r\n"),
            None
        );
        // A server name whose own version is missing falls back to the compatible one.
        let server = Server::from_info("redis_version:7.2.4\nserver_name:other\n").unwrap();
        assert_eq!(server.version, v(7, 2, 4));
        assert_eq!(server.to_string(), "other 7.2.4");
    }

    #[test]
    fn minimum_is_6_2() {
        assert!(v(6, 2, 0) >= MINIMUM);
        assert!(v(6, 1, 99) < MINIMUM);
        assert!(v(10, 0, 0) >= MINIMUM);
        assert_eq!(MINIMUM.to_string(), "6.2.0");
    }
}
