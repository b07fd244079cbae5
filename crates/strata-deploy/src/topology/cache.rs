//! `[cache]`: the in-process cache of every API server (L1), and the shared cache nodes (L2)
//! that `strata up` runs — or no caching at all.

use super::reader::{Section, variants};
use super::{CacheEngine, CacheSpec, L1Coherence, MAX_CACHE_NODES};

/// What `[cache] engine` names: an engine of `strata cache` (its `clap::ValueEnum` names), the
/// in-process cache alone, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    InProcess,
    Shared(CacheEngine),
    Off,
}

/// Reads `[cache]`.
pub(super) fn read(sec: &mut Section<'_>) -> CacheSpec {
    let mut engines = vec![("in-process".to_string(), Engine::InProcess)];
    engines.extend(
        variants::<CacheEngine>()
            .into_iter()
            .map(|(name, engine)| (name, Engine::Shared(engine))),
    );
    engines.push(("off".to_string(), Engine::Off));
    let engine = sec.one_of("engine", engines);
    let nodes = sec.int::<u8>("nodes", 1..=MAX_CACHE_NODES);
    let max_mib = sec.int("max_mib", 1..=65_536);
    let l1_mib = sec.int("l1_mib", 1..=65_536);
    let l1_ttl_ms = sec.millis("l1_ttl_ms", 1..=86_400_000);
    let coherence = sec.choice::<L1Coherence>("coherence");

    let shared = match engine {
        Some(Engine::Shared(engine)) => Some((engine, nodes.unwrap_or(1))),
        // A bad engine has been reported; what goes with it is not judged.
        None if sec.has("engine") => None,
        _ => {
            for key in ["nodes", "max_mib"] {
                if !sec.has(key) {
                    continue;
                }
                sec.error(
                    key,
                    format!(
                        "`cache.{key}` needs a shared cache: add engine = \"redis\" (or \
                         \"memcached\")"
                    ),
                );
            }
            None
        }
    };
    CacheSpec {
        shared,
        max_mib,
        l1_mib,
        l1_ttl_ms,
        off: engine == Some(Engine::Off),
        coherence,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::super::*;

    #[test]
    fn the_cache_table_names_an_engine_and_its_nodes_and_refuses_what_does_not_fit() {
        let t = Topology::parse(
            "[cache]\nengine = \"redis\"\nnodes = 2\nmax_mib = 128\nl1_ttl_ms = 60000\n[api]\ncount = 3\n",
            8080,
        )
        .expect("valid");
        assert_eq!(t.cache.shared, Some((CacheEngine::Redis, 2)));
        assert_eq!(t.cache.max_mib, Some(128));
        assert_eq!(t.cache.l1_ttl_ms, Some(60_000));
        assert_eq!(t.cache_nodes(), 2);
        assert_eq!(t.instance_count(), 3 + 2, "3 API servers and 2 cache nodes");
        let t = Topology::parse("[cache]\nl1_mib = 32\n[api]\ncount = 3\n", 8080).expect("valid");
        assert_eq!(t.cache.shared, None);
        assert!(!t.cache.off);
        let t =
            Topology::parse("[cache]\nengine = \"off\"\n[api]\ncount = 3\n", 8080).expect("valid");
        assert!(t.cache.off && t.cache.shared.is_none());
        assert_eq!(t.cache_nodes(), 0);
        let t = Topology::parse("[cache]\ncoherence = \"ttl\"\n[api]\ncount = 3\n", 8080)
            .expect("valid");
        assert_eq!(t.cache.coherence, Some(L1Coherence::Ttl));
        let e = errors("[cache]\ncoherence = \"bus\"\n[api]\ncount = 3\n");
        assert!(
            e[0].to_string().contains("\"watch\""),
            "the choices are named: {e:?}"
        );

        let e = errors("[cache]\nengine = \"varnish\"\nnodes = 9\n[api]\ncount = 3\n");
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("line 2:") && s.contains("\"redis\"")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("line 3:")
                    && s.contains("`cache.nodes` must be between 1 and 4")),
            "{shown:#?}"
        );
        let e = errors("[cache]\nnodes = 2\nl1_ttl_ms = 0\nsize = 1\n[api]\ncount = 3\n");
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(e.len(), 3, "{shown:#?}");
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("line 2:") && s.contains("needs a shared cache")),
            "{shown:#?}"
        );
    }

    #[test]
    fn the_engines_are_those_of_strata_cache_and_the_in_process_or_no_cache() {
        let e = errors("[cache]\nengine = \"redsi\"\n[api]\ncount = 3\n");
        assert_eq!(
            e[0].message,
            "`cache.engine` must be one of \"in-process\", \"redis\", \"memcached\" or \"off\", \
             not \"redsi\" (did you mean `redis`?)"
        );
        let t = Topology::parse("[cache]\nengine = \"memcached\"\n[api]\ncount = 3\n", 8080)
            .expect("valid");
        assert_eq!(t.cache.shared, Some((CacheEngine::Memcached, 1)));
    }
}
