//! The parsers the gateway owns, fed the corpus in `tests/corpus/` and random mutations of it
//! (proptest: byte flips, truncations, insertions). Whatever the input, they return a value or
//! an error; they never panic. The seeds that are well-formed must keep parsing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use dirbridge::config::Config;
use dirbridge::source::syncrepl::control;
use dirbridge::target::scim::decode;
use proptest::prelude::*;

fn corpus(kind: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let bytes = if p.extension().is_some_and(|e| e == "hex") {
                hex::decode(String::from_utf8(bytes).unwrap().trim()).unwrap()
            } else {
                bytes
            };
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty corpus {}", dir.display());
    out
}

fn config(bytes: &[u8]) -> Result<Config, String> {
    let text = String::from_utf8_lossy(bytes);
    Config::parse(&text, Path::new("/etc/dirbridge/fuzz.toml")).map_err(|e| e.to_string())
}

fn scim(bytes: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        let _ = decode::user(&v, &["nickName".to_string()]);
        let _ = decode::group(&v);
        let _ = decode::list(&v);
    }
}

fn ber(bytes: &[u8]) {
    let _ = dirbridge::source::paged::decode(Some(bytes));
    let _ = control::decode_state(bytes);
    let _ = control::decode_done(Some(bytes));
    let _ = control::decode_info_value(bytes);
    if let Ok((_, tag)) = ldap3::asn1::parse_tag(bytes) {
        let _ = control::decode_intermediate(tag.clone());
        let _ = dirbridge::source::entry::decode_entry(tag);
    }
}

#[test]
fn the_corpus_parses_as_expected() {
    for (p, bytes) in corpus("config") {
        let r = config(&bytes);
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        match name.as_str() {
            "minimal.toml" => assert!(r.is_ok(), "{name}: {r:?}"),
            // Valid, up to the secret it takes from the environment.
            "example.toml" => assert!(
                r.as_ref()
                    .is_err_and(|e| e.contains("DIRBRIDGE_BIND_PASSWORD")),
                "{r:?}"
            ),
            _ => {
                let e = r.expect_err(&name);
                assert!(
                    e.contains("fuzz.toml"),
                    "{name}: the error names the file: {e}"
                );
                assert!(!e.contains("hunter2") && !e.contains("second-line"), "{e}");
            }
        }
    }
    for (p, bytes) in corpus("scim") {
        scim(&bytes);
        if p.ends_with("user.json") {
            let v = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(decode::user(&v, &[]).unwrap().user.user_name, "bjensen");
        }
    }
    for (p, bytes) in corpus("ber") {
        ber(&bytes);
        if p.ends_with("sync-state.hex") {
            assert!(control::decode_state(&bytes).is_ok());
        }
        if p.ends_with("sync-info-idset.hex") {
            assert!(control::decode_info_value(&bytes).is_ok());
        }
        if p.ends_with("paged-results.hex") {
            let page = dirbridge::source::paged::decode(Some(&bytes)).unwrap();
            assert_eq!(
                (page.size_estimate, page.cookie),
                (500, b"cookie1".to_vec())
            );
        }
    }
}

/// A seed with random edits: flips, a cut, an insertion.
fn mutate(seed: &[u8], flips: &[(usize, u8)], cut: usize, insert: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for (i, b) in flips {
        if !v.is_empty() {
            let i = i % v.len();
            v[i] ^= b;
        }
    }
    if !v.is_empty() {
        v.truncate(v.len() - cut % v.len());
    }
    let at = if v.is_empty() { 0 } else { cut % v.len() };
    v.splice(at..at, insert.iter().copied());
    v
}

fn edits() -> impl Strategy<Value = (Vec<(usize, u8)>, usize, Vec<u8>)> {
    (
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        any::<usize>(),
        proptest::collection::vec(any::<u8>(), 0..16),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn mutated_configs_never_panic((flips, cut, insert) in edits(), which in any::<usize>()) {
        let seeds = corpus("config");
        let (_, seed) = &seeds[which % seeds.len()];
        let _ = config(&mutate(seed, &flips, cut, &insert));
    }

    #[test]
    fn mutated_scim_answers_never_panic((flips, cut, insert) in edits(), which in any::<usize>()) {
        let seeds = corpus("scim");
        let (_, seed) = &seeds[which % seeds.len()];
        scim(&mutate(seed, &flips, cut, &insert));
    }

    #[test]
    fn mutated_ber_never_panics((flips, cut, insert) in edits(), which in any::<usize>()) {
        let seeds = corpus("ber");
        let (_, seed) = &seeds[which % seeds.len()];
        ber(&mutate(seed, &flips, cut, &insert));
    }
}
