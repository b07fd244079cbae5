//! `[sessions]`: where the API servers keep sessions and login-failure counters.

use super::SessionsEngine;
use super::reader::Section;

/// The names `[sessions] engine` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Engine {
    Database,
    Redis,
}

/// Reads `[sessions]`: `engine`.
pub(super) fn read(sec: &mut Section<'_>) -> SessionsEngine {
    match sec.choice::<Engine>("engine") {
        Some(Engine::Redis) => SessionsEngine::Redis,
        Some(Engine::Database) | None => SessionsEngine::Database,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::super::*;

    #[test]
    fn the_sessions_table_chooses_the_database_or_a_redis_of_its_own() {
        let t = Topology::parse("[api]\ncount = 3\n", 8080).expect("valid");
        assert_eq!(t.sessions, SessionsEngine::Database);
        let t = Topology::parse("[api]\ncount = 3\n[sessions]\nengine = \"redis\"\n", 8080)
            .expect("valid");
        assert_eq!(t.sessions, SessionsEngine::Redis);
        assert_eq!(
            t.instance_count(),
            3 + 1,
            "3 API servers and the session Redis"
        );
        let e = errors("[api]\ncount = 3\n[sessions]\nengine = \"memcached\"\nttl = 5\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e.iter().any(|x| x.line == Some(4)
                && x.message
                    == "`sessions.engine` must be \"database\" or \"redis\", not \"memcached\""),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|x| x.line == Some(5)
                    && x.message == "unknown key `sessions.ttl` (known: engine)"),
            "{e:?}"
        );
    }
}
