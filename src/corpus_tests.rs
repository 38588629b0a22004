//! Every parser of outside input (the config file, BER from a directory, SCIM answers, DNs,
//! schema definitions, Retry-After, objectSid, objectGUID), fed the corpus in `tests/corpus/`
//! and random edits of it (byte flips, a cut, an insertion): whatever arrives, they return a
//! value or an error, and never panic. The seeds that are well-formed must keep parsing. (The
//! SCIM client's discovery and look-up readers get the same in `target/scim/tests.rs`.)

use std::path::{Path, PathBuf};

use proptest::prelude::*;

/// The seeds of one corpus folder; `.hex` files are decoded.
pub(crate) fn corpus(kind: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let bytes = if p.extension().is_some_and(|e| e == "hex") {
                hex::decode(String::from_utf8_lossy(&bytes).trim())
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
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

/// A seed with random edits.
pub(crate) fn mutate(seed: &[u8], flips: &[(usize, u8)], cut: usize, insert: &[u8]) -> Vec<u8> {
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

pub(crate) fn edits() -> impl Strategy<Value = (Vec<(usize, u8)>, usize, Vec<u8>)> {
    (
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        any::<usize>(),
        proptest::collection::vec(any::<u8>(), 0..16),
    )
}

fn config(bytes: &[u8]) -> Result<crate::config::Config, String> {
    let text = String::from_utf8_lossy(bytes);
    crate::config::Config::parse(&text, Path::new("/etc/dirbridge/fuzz.toml"))
        .map_err(|e| e.to_string())
}

fn scim(bytes: &[u8]) {
    use crate::target::scim::decode;
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        let _ = decode::user(&v, &["nickName".to_string()]);
        let _ = decode::group(&v);
        let _ = decode::list(&v);
    }
}

fn ber(bytes: &[u8]) {
    use crate::source::syncrepl::control;
    let _ = crate::source::paged::decode(Some(bytes));
    let _ = control::decode_state(bytes);
    let _ = control::decode_done(Some(bytes));
    let _ = control::decode_info_value(bytes);
    if let Ok((_, tag)) = ldap3::asn1::parse_tag(bytes) {
        let _ = control::decode_intermediate(tag.clone());
        let _ = crate::source::entry::decode_entry(tag);
    }
}

#[test]
fn the_config_scim_and_ber_seeds_parse_as_expected() {
    use crate::source::syncrepl::control;
    for (p, bytes) in corpus("config") {
        let r = config(&bytes);
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        match name {
            "minimal.toml" => assert!(r.is_ok(), "{name}: {r:?}"),
            // Valid, up to the secret it takes from the environment.
            "example.toml" => assert!(
                r.as_ref()
                    .is_err_and(|e| e.contains("DIRBRIDGE_BIND_PASSWORD")),
                "{r:?}"
            ),
            _ => {
                let e = r.err().unwrap_or_else(|| panic!("{name} parsed"));
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
            let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
            let u = crate::target::scim::decode::user(&v, &[]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(u.user.user_name, "bjensen");
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
            let page = crate::source::paged::decode(Some(&bytes)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                (page.size_estimate, page.cookie),
                (500, b"cookie1".to_vec())
            );
        }
    }
}

/// Text a directory or a provider sends: DNs, attribute descriptions, schema definitions,
/// Retry-After values.
fn text(bytes: &[u8]) {
    use crate::source::{dn, range, schema};
    let t = String::from_utf8_lossy(bytes);
    let t = t.trim_end_matches('\n');
    let (guid, rest) = dn::split_extended(t);
    let _ = guid.map(|g| dn::guid_token(&g));
    let _ = dn::normalize(rest);
    let _ = dn::first_rdn_value(rest);
    let _ = schema::names_of(t);
    let _ = crate::target::retry::parse_retry_after(t, time::OffsetDateTime::now_utc());
    let _ = crate::mapping::key::guid_bytes(t);
    let _ = crate::source::sid::sibling(t, 513);
    let mut e = crate::source::entry::RawEntry {
        dn: t.to_string(),
        dn_guid: None,
        attrs: [(t.to_string(), vec![bytes.to_vec()])].into(),
    };
    let _ = range::fold(&mut e);
}

/// Binary values: objectSid, objectGUID.
fn binary(bytes: &[u8]) {
    let _ = crate::source::sid::to_string(bytes);
    if let Ok(guid) = <&[u8; 16]>::try_from(bytes) {
        let text = crate::mapping::key::guid_string(guid);
        assert_eq!(crate::mapping::key::guid_bytes(&text).as_ref(), Some(guid));
    }
    let entry = crate::source::entry::RawEntry {
        dn: "cn=x".into(),
        dn_guid: None,
        attrs: [("objectGUID".to_string(), vec![bytes.to_vec()])].into(),
    };
    for format in [
        crate::config::KeyFormat::Auto,
        crate::config::KeyFormat::Guid,
        crate::config::KeyFormat::Hex,
    ] {
        let _ = crate::mapping::key::stable_key(&entry, "objectGUID", format);
    }
}

#[test]
fn the_corpus_decodes_as_expected() {
    for (p, bytes) in corpus("text") {
        text(&bytes);
        let t = String::from_utf8_lossy(&bytes).trim_end().to_string();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        match name {
            "dn-extended.txt" => {
                let (guid, rest) = crate::source::dn::split_extended(&t);
                assert_eq!(
                    guid.as_deref(),
                    Some("5d1a3c0e-8f2b-4b7a-9c1d-2e3f4a5b6c7d")
                );
                assert!(rest.starts_with("CN=Ann Archer"), "{rest}");
            }
            "schema-attribute.txt" => {
                assert_eq!(crate::source::schema::names_of(&t), ["cn", "commonname"]);
            }
            "retry-after-seconds.txt" => assert_eq!(
                crate::target::retry::parse_retry_after(&t, time::OffsetDateTime::now_utc()),
                Some(std::time::Duration::from_secs(120))
            ),
            "range-attribute.txt" => {
                let mut e = crate::source::entry::RawEntry {
                    dn: "cn=g".into(),
                    dn_guid: None,
                    attrs: [(t.clone(), vec![b"x".to_vec()])].into(),
                };
                assert_eq!(
                    crate::source::range::fold(&mut e),
                    [("member".to_string(), 1500)]
                );
            }
            _ => {}
        }
    }
    for (p, bytes) in corpus("bin") {
        binary(&bytes);
        if p.ends_with("object-sid.hex") {
            assert_eq!(
                crate::source::sid::to_string(&bytes).as_deref(),
                Some("S-1-5-21-2127521184-1604012920-1887927527-1211")
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

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

    #[test]
    fn mutated_text_never_panics((flips, cut, insert) in edits(), which in any::<usize>()) {
        let seeds = corpus("text");
        let (_, seed) = &seeds[which % seeds.len()];
        text(&mutate(seed, &flips, cut, &insert));
    }

    #[test]
    fn mutated_binary_values_never_panic((flips, cut, insert) in edits(), which in any::<usize>()) {
        let seeds = corpus("bin");
        let (_, seed) = &seeds[which % seeds.len()];
        binary(&mutate(seed, &flips, cut, &insert));
    }
}
