//! A directory entry as raw bytes: every value of every attribute, whether it is text or not.
//!
//! ldap3's `SearchEntry::construct` panics on malformed BER and splits values between `attrs` and
//! `bin_attrs`; decoding the entry here avoids both, so a hostile or broken server answer becomes
//! an error, and a binary key (objectGUID) is read from one map.

use ldap3::asn1::{StructureTag, PL};

pub(crate) use super::attrs::{Attrs, Values};

/// One entry: its DN and its attributes, names lower-cased (LDAP names are case-insensitive).
/// Serialized (for the directory mirror) with text values as strings and other values as hex.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RawEntry {
    pub dn: String,
    /// The object's GUID, when the server sent the DN in extended form (AD).
    pub dn_guid: Option<String>,
    #[serde(with = "values")]
    pub attrs: Attrs,
}

/// Attribute values as JSON: `"text"` when UTF-8, `{"hex": "..."}` otherwise.
mod values {
    use serde::de::{MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Attrs;

    /// A JSON object read as its pairs, in order (no map built only to be packed).
    struct Pairs;

    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, Vec<Value>)>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map of attribute names to values")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some(pair) = map.next_entry()? {
                out.push(pair);
            }
            Ok(out)
        }
    }

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Value {
        Text(String),
        Bytes { hex: String },
    }

    pub(super) fn serialize<S: Serializer>(attrs: &Attrs, s: S) -> Result<S::Ok, S::Error> {
        // Names come in order, as the map this replaced wrote them.
        let out: Vec<(&str, Vec<Value>)> = attrs
            .iter()
            .map(|(k, vs)| {
                let vs = vs
                    .map(|v| match std::str::from_utf8(v) {
                        Ok(t) => Value::Text(t.to_string()),
                        Err(_) => Value::Bytes {
                            hex: hex::encode(v),
                        },
                    })
                    .collect();
                (k, vs)
            })
            .collect();
        s.collect_map(out)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Attrs, D::Error> {
        let raw: Vec<(String, Vec<Value>)> = d.deserialize_map(Pairs)?;
        raw.into_iter()
            .map(|(k, vs)| {
                let vs = vs
                    .into_iter()
                    .map(|v| match v {
                        Value::Text(t) => Ok(t.into_bytes()),
                        Value::Bytes { hex } => hex::decode(hex).map_err(serde::de::Error::custom),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((k, vs))
            })
            .collect()
    }
}

/// An attribute value that should be text but is not valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attribute {attribute} of {dn} is not valid UTF-8 text")]
pub struct NotText {
    pub dn: String,
    pub attribute: String,
}

impl RawEntry {
    /// What holding the entry costs, roughly: the bytes of the DN, names and values, and a
    /// vector's worth for each value (empty values are not free).
    pub(crate) fn size(&self) -> usize {
        const PER_VALUE: usize = std::mem::size_of::<Vec<u8>>();
        self.dn.len()
            + self
                .attrs
                .iter()
                .map(|(k, v)| k.len() + v.map(|x| x.len() + PER_VALUE).sum::<usize>())
                .sum::<usize>()
    }

    /// The values of one attribute (its name in any case); none when the entry lacks it.
    pub fn values(&self, name: &str) -> Values<'_> {
        self.attrs.get(name).unwrap_or_else(Values::none)
    }

    pub fn has(&self, name: &str) -> bool {
        self.values(name).len() > 0
    }

    /// The first value of the first attribute in `names` that has one, as text, byte for byte
    /// (leading and trailing spaces kept); an all-blank value counts as absent.
    pub fn first_text(&self, names: &[String]) -> Result<Option<String>, NotText> {
        Ok(self.first_str(names)?.map(str::to_string))
    }

    /// [`RawEntry::first_text`], borrowed from the entry.
    pub fn first_str(&self, names: &[String]) -> Result<Option<&str>, NotText> {
        for name in names {
            for value in self.values(name) {
                let text = std::str::from_utf8(value).map_err(|_| NotText {
                    dn: self.dn.clone(),
                    attribute: name.clone(),
                })?;
                if !text.trim().is_empty() {
                    return Ok(Some(text));
                }
            }
        }
        Ok(None)
    }

    /// Every value of one attribute, as text.
    pub fn texts(&self, name: &str) -> Result<Vec<String>, NotText> {
        self.values(name)
            .map(|v| {
                std::str::from_utf8(v)
                    .map(|s| s.to_string())
                    .map_err(|_| NotText {
                        dn: self.dn.clone(),
                        attribute: name.to_string(),
                    })
            })
            .collect()
    }
}

/// Decodes a SearchResultEntry (RFC 4511 §4.5.2) without panicking on a malformed one.
pub(crate) fn decode_entry(tag: StructureTag) -> Result<RawEntry, String> {
    fn constructed(t: StructureTag, what: &str) -> Result<Vec<StructureTag>, String> {
        match t.payload {
            PL::C(v) => Ok(v),
            PL::P(_) => Err(format!("malformed search entry: {what} is not a sequence")),
        }
    }
    fn primitive(t: StructureTag, what: &str) -> Result<Vec<u8>, String> {
        match t.payload {
            PL::P(v) => Ok(v),
            PL::C(_) => Err(format!(
                "malformed search entry: {what} is not an octet string"
            )),
        }
    }
    if tag.id != 4 {
        return Err(format!(
            "unexpected protocol op {} where a search entry was expected",
            tag.id
        ));
    }
    let mut parts = constructed(tag, "entry")?.into_iter();
    let dn_bytes = primitive(parts.next().ok_or("malformed search entry: no DN")?, "DN")?;
    let dn = String::from_utf8(dn_bytes)
        .map_err(|_| "malformed search entry: DN is not UTF-8".to_string())?;
    let mut attrs: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    if let Some(list) = parts.next() {
        for partial in constructed(list, "attribute list")? {
            let mut pa = constructed(partial, "attribute")?.into_iter();
            let name = pa
                .next()
                .ok_or_else(|| format!("malformed attribute in {dn}: no type"))
                .and_then(|t| primitive(t, "attribute type"))?;
            let name = String::from_utf8(name)
                .map_err(|_| format!("malformed attribute in {dn}: type is not UTF-8"))?;
            let values = match pa.next() {
                Some(set) => constructed(set, "value set")?
                    .into_iter()
                    .map(|v| primitive(v, "attribute value"))
                    .collect::<Result<Vec<_>, _>>()?,
                None => Vec::new(),
            };
            attrs.push((name, values));
        }
    }
    let (dn_guid, plain) = super::dn::split_extended(&dn);
    let dn = plain.to_string();
    Ok(RawEntry {
        dn,
        dn_guid,
        attrs: Attrs::from_pairs(attrs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::TagClass;

    fn prim(v: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id: 4,
            payload: PL::P(v.to_vec()),
        }
    }
    fn seq(id: u64, v: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::C(v),
        }
    }

    #[test]
    fn decodes_text_and_binary_values_into_one_map() {
        let guid = [0xffu8, 0xfe, 0x00, 0x01];
        let entry = seq(
            4,
            vec![
                prim(b"uid=a,dc=x"),
                seq(
                    16,
                    vec![
                        seq(16, vec![prim(b"objectGUID"), seq(17, vec![prim(&guid)])]),
                        seq(
                            16,
                            vec![prim(b"cn"), seq(17, vec![prim(b"Ann"), prim(b" ")])],
                        ),
                    ],
                ),
            ],
        );
        let e = decode_entry(entry).unwrap();
        assert_eq!(e.dn, "uid=a,dc=x");
        assert_eq!(e.values("OBJECTGUID").to_vecs(), [guid.to_vec()]);
        assert_eq!(
            e.first_text(&["cn".into()]).unwrap().as_deref(),
            Some("Ann")
        );
        assert!(e.first_text(&["objectGUID".into()]).is_err());
    }

    #[test]
    fn entries_round_trip_through_json_with_binary_values() {
        let mut e = RawEntry {
            dn: "cn=x".into(),
            dn_guid: Some("g".into()),
            ..Default::default()
        };
        e.attrs.insert("objectguid", vec![vec![0xff, 0x00, 0x41]]);
        e.attrs.insert("cn", vec![b"x".to_vec(), b"y".to_vec()]);
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"ff0041\""), "{json}");
        // The layout the mirror has always been stored in: names in order, values as sent.
        assert!(
            json.contains(r#""attrs":{"cn":["x","y"],"objectguid":[{"hex":"ff0041"}]}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<RawEntry>(&json).unwrap(), e);
    }

    #[test]
    fn malformed_entry_is_an_error_not_a_panic() {
        assert!(decode_entry(prim(b"x")).is_err());
        assert!(decode_entry(seq(4, vec![])).is_err());
        assert!(decode_entry(seq(4, vec![prim(b"dn"), prim(b"not a list")])).is_err());
        assert!(decode_entry(seq(4, vec![prim(&[0xff, 0xfe])])).is_err());
    }
}
