use serde_json::json;

use super::encode::{remove_members_patch, user_patch, user_resource};
use super::{decode, filter_literal, ENTERPRISE_USER};
use crate::model::{FieldChange, FieldValue, User, UserField};

fn ann() -> User {
    let mut u = User {
        user_name: "ann".into(),
        given_name: Some("Ann".into()),
        family_name: Some("Archer".into()),
        display_name: Some("Ann Archer".into()),
        email: Some("ann@example.org".into()),
        active: true,
        title: Some("CTO".into()),
        department: Some("R&D".into()),
        employee_number: Some("7".into()),
        manager: Some("boss-key".into()),
        ..Default::default()
    };
    u.custom.insert("nickName".into(), "annie".into());
    u.custom.insert(
        "urn:example:params:scim:schemas:extension:acme:2.0:User:costCenter".into(),
        "42".into(),
    );
    u
}

#[test]
fn a_created_user_carries_every_required_field_and_its_schemas() {
    let doc = user_resource("key-1", &ann(), Some("boss-id"));
    assert_eq!(doc["externalId"], "key-1");
    assert_eq!(doc["userName"], "ann");
    assert_eq!(
        doc["name"],
        json!({"givenName": "Ann", "familyName": "Archer"})
    );
    assert_eq!(doc["displayName"], "Ann Archer");
    assert_eq!(
        doc["emails"],
        json!([{"value": "ann@example.org", "type": "work", "primary": true}])
    );
    assert_eq!(doc["active"], true);
    assert_eq!(doc[ENTERPRISE_USER]["manager"]["value"], "boss-id");
    assert_eq!(doc["nickName"], "annie");
    assert_eq!(
        doc["urn:example:params:scim:schemas:extension:acme:2.0:User"]["costCenter"],
        "42"
    );
    let schemas: Vec<&str> = doc["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(schemas.contains(&super::CORE_USER));
    assert!(schemas.contains(&ENTERPRISE_USER));
    assert!(schemas.contains(&"urn:example:params:scim:schemas:extension:acme:2.0:User"));
}

#[test]
fn decoding_what_was_encoded_gives_the_same_user_back() {
    let mut doc = user_resource("key-1", &ann(), Some("boss-id"));
    doc["id"] = json!("id-1");
    let custom = vec![
        "nickName".to_string(),
        "urn:example:params:scim:schemas:extension:acme:2.0:User:costCenter".to_string(),
    ];
    let remote = decode::user(&doc, &custom).unwrap();
    assert_eq!(remote.id, "id-1");
    assert_eq!(remote.external_id.as_deref(), Some("key-1"));
    let mut expected = ann();
    expected.manager = Some("boss-id".into()); // ids, not keys, on the way back
    assert_eq!(remote.user, expected);
}

#[test]
fn a_patch_carries_only_the_changes() {
    let changes = vec![
        FieldChange {
            field: UserField::Title,
            value: FieldValue::Text(None),
        },
        FieldChange {
            field: UserField::Email,
            value: FieldValue::Text(Some("new@example.org".into())),
        },
        FieldChange {
            field: UserField::Active,
            value: FieldValue::Bool(false),
        },
        FieldChange {
            field: UserField::Manager,
            value: FieldValue::Text(Some("boss-key".into())),
        },
    ];
    let doc = user_patch(&changes, &User::default(), Some("boss-id"));
    assert_eq!(
        doc["Operations"],
        json!([
            {"op": "remove", "path": "title"},
            {"op": "replace", "path": "emails", "value": [{"value": "new@example.org", "type": "work", "primary": true}]},
            {"op": "replace", "path": "active", "value": false},
            {"op": "replace", "path": format!("{ENTERPRISE_USER}:manager"), "value": {"value": "boss-id"}},
        ])
    );
}

#[test]
fn hostile_values_cannot_change_a_filter_or_a_member_path() {
    let hostile = "x\" or userName pr or \"\\\r\n";
    let lit = filter_literal(hostile);
    // One JSON string literal: parsing it back gives the value, whole.
    assert_eq!(serde_json::from_str::<String>(&lit).unwrap(), hostile);
    let doc = remove_members_patch(&["a\"]".to_string()]);
    assert_eq!(doc["Operations"][0]["path"], "members[value eq \"a\\\"]\"]");
}

#[test]
fn decoding_is_lenient_about_extras_and_strict_about_ids() {
    let doc = json!({"userName": "x"});
    assert!(decode::user(&doc, &[]).is_err());
    let doc = json!({"id": "1", "userName": "x", "emails": [{"value": "p@x", "primary": true}, {"value": "w@x", "type": "work"}], "weird": [1, 2]});
    let u = decode::user(&doc, &[]).unwrap().user;
    assert_eq!(u.email.as_deref(), Some("w@x"));
    assert!(u.active, "a resource without active is taken as active");
    assert!(decode::list(&json!({"Resources": "nope"})).is_err());
    assert_eq!(
        decode::list(&json!({"totalResults": 0})).unwrap().0.len(),
        0
    );
    let g = decode::group(&json!({"id": "g", "displayName": "G", "members": [{"value": "u1"}, {"display": "no value"}]})).unwrap();
    assert_eq!(g.member_ids, vec!["u1"]);
}

#[test]
fn a_new_element_of_a_multi_valued_attribute_is_added_whole_an_existing_one_replaced() {
    let mobile = "phoneNumbers[type eq \"mobile\"].value";
    let city = "addresses[type eq \"work\"].locality";
    let zip = "addresses[type eq \"work\"].postalCode";
    let change = |p: &str, v: Option<&str>| FieldChange {
        field: UserField::Custom(p.into()),
        value: FieldValue::Text(v.map(str::to_string)),
    };
    let before = User::default();
    let doc = user_patch(
        &[
            change(mobile, Some("+1")),
            change(city, Some("Paris")),
            change(zip, Some("75001")),
        ],
        &before,
        None,
    );
    assert_eq!(
        doc["Operations"],
        json!([
            {"op": "add", "path": "addresses", "value": [{"type": "work", "locality": "Paris", "postalCode": "75001"}]},
            {"op": "add", "path": "phoneNumbers", "value": [{"type": "mobile", "value": "+1"}]}
        ])
    );
    let mut before = User::default();
    before.custom.insert(mobile.into(), "+1".into());
    before.custom.insert(city.into(), "Paris".into());
    let doc = user_patch(
        &[
            change(mobile, Some("+2")),
            change(zip, Some("75002")),
            change(city, None),
        ],
        &before,
        None,
    );
    assert_eq!(
        doc["Operations"],
        json!([
            {"op": "replace", "path": mobile, "value": "+2"},
            {"op": "replace", "path": zip, "value": "75002"},
            {"op": "remove", "path": city}
        ])
    );
    // The same operations applied locally (providers without PATCH) give the same resource.
    let mut resource = json!({"id": "1", "userName": "ann",
        "phoneNumbers": [{"type": "mobile", "value": "+1"}, {"type": "home", "value": "9"}],
        "addresses": [{"type": "work", "locality": "Paris"}]});
    super::local_patch::apply(&mut resource, &doc).unwrap();
    assert_eq!(
        resource["phoneNumbers"],
        json!([{"type": "mobile", "value": "+2"}, {"type": "home", "value": "9"}])
    );
    assert_eq!(
        resource["addresses"],
        json!([{"type": "work", "postalCode": "75002"}])
    );
}

#[test]
fn the_last_mapped_value_of_an_element_removes_the_element() {
    let mobile = "phoneNumbers[type eq \"mobile\"].value";
    let mut before = User::default();
    before.custom.insert(mobile.into(), "+1".into());
    let doc = user_patch(
        &[FieldChange {
            field: UserField::Custom(mobile.into()),
            value: FieldValue::Text(None),
        }],
        &before,
        None,
    );
    assert_eq!(
        doc["Operations"],
        json!([{"op": "remove", "path": "phoneNumbers[type eq \"mobile\"]"}])
    );
}

#[test]
fn members_given_only_by_ref_are_read_by_their_id() {
    let g = decode::group(&json!({"id": "g", "displayName": "G", "members": [
        {"$ref": "https://idp.example.com/scim/v2/Users/u-1"},
        {"value": "u-2", "$ref": "https://idp.example.com/scim/v2/Users/other"},
        {"display": "no reference at all"}
    ]}))
    .unwrap();
    assert_eq!(g.member_ids, ["u-1", "u-2"]);
}

/// A provider's answer, whatever it holds, as each reader of provider answers takes it.
fn read_answer(bytes: &[u8]) {
    use super::discover::Capabilities;
    use super::lookup::{pick, Attr, Index};
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return;
    };
    let mut c = Capabilities::default();
    c.read_service_provider_config(&doc);
    c.read_resource_types(&doc);
    c.read_schemas(&doc);
    let _ = c.needs_formatted_name();
    let mut u = ann();
    let _ = c.fit(&mut u);
    let _ = decode::member_refs(&doc);
    let items = match decode::list(&doc) {
        Ok((items, _)) => items,
        Err(_) => vec![doc.clone()],
    };
    let attrs = [Attr::UserName, Attr::ExternalId, Attr::DisplayName];
    let index = Index::new(&items, &attrs);
    for attr in attrs {
        let _ = index.candidates(attr, "bjensen");
        let _ = pick(items.clone(), attr, "bjensen");
    }
}

#[test]
fn discovery_seeds_are_read() {
    use super::discover::Capabilities;
    let mut c = Capabilities::default();
    for (p, bytes) in crate::corpus_tests::corpus("scim") {
        read_answer(&bytes);
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        match p.file_name().and_then(|n| n.to_str()).unwrap_or_default() {
            "service-provider-config.json" => c.read_service_provider_config(&doc),
            "resource-types.json" => c.read_resource_types(&doc),
            "schemas.json" => c.read_schemas(&doc),
            _ => {}
        }
    }
    assert_eq!(
        (c.patch, c.filter, c.max_results),
        (Some(true), Some(true), Some(200))
    );
    assert!(!c.needs_formatted_name());
    let mut u = ann();
    // The schema seed has no title; the enterprise extension is taken.
    assert!(c.fit(&mut u).contains(&"title".to_string()));
    assert_eq!(u.department.as_deref(), Some("R&D"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

    #[test]
    fn mutated_provider_answers_never_panic(
        (flips, cut, insert) in crate::corpus_tests::edits(),
        which in proptest::prelude::any::<usize>(),
    ) {
        let seeds = crate::corpus_tests::corpus("scim");
        let (_, seed) = &seeds[which % seeds.len()];
        read_answer(&crate::corpus_tests::mutate(seed, &flips, cut, &insert));
    }
}

proptest::proptest! {
    /// A resource's URL is the base joined with its name, the id escaped as one segment, for
    /// any id (slashes, `?`, `#`, `%`, spaces, non-ASCII) and bases with or without a path.
    #[test]
    fn a_resource_url_is_the_base_joined_with_the_resource_and_the_id_one_segment(
        base in proptest::sample::select(vec![
            "http://127.0.0.1:8080/", "https://h.example/scim/v2/", "https://h.example/t%20x/scim/",
        ]),
        resource in proptest::sample::select(vec!["Users", "Groups", "ServiceProviderConfig"]),
        // Any text, and the ids a URL cannot name as a segment (`.*` never draws a line break
        // and seldom `.` or `..`).
        id in proptest::option::of(proptest::prop_oneof![".*", "[.]{0,3}", "[a.\t\n\r]{0,3}"]),
    ) {
        let base = url::Url::parse(base).unwrap_or_else(|e| panic!("{e}"));
        let mut want = base.join(resource).unwrap_or_else(|e| panic!("{e}"));
        if let Some(id) = &id {
            want.path_segments_mut().unwrap_or_else(|()| panic!("no path")).push(id);
        }
        let got = super::client::resource_url(&base, resource, id.as_deref());
        let unnameable = id.as_deref().is_some_and(|id| matches!(id, "" | "." | "..") || id.contains(['\t', '\n', '\r']));
        if unnameable {
            // Refused, not sent to whatever the URL would name instead.
            proptest::prop_assert_eq!(got, Err(super::client::Unnamed::Id));
            return Ok(());
        }
        proptest::prop_assert_eq!(got.as_ref().map(url::Url::as_str), Ok(want.as_str()));
        if let (Some(id), Ok(got)) = (&id, &got) {
            let last = got.path_segments().and_then(|mut s| s.next_back()).unwrap_or_default();
            let back = percent_encoding::percent_decode_str(last).decode_utf8_lossy();
            proptest::prop_assert_eq!(back.as_ref(), id.as_str());
        }
    }
}

#[test]
fn an_id_a_url_cannot_name_is_refused_not_sent_as_another_object() {
    let cfg = crate::config::Config::parse(
        "[ldap]\nurl = \"ldap://127.0.0.1:3890\"\nbase_dn = \"dc=example,dc=org\"\n\
         [target]\nkind = \"scim\"\nurl = \"http://127.0.0.1:8080/scim/v2\"\ntoken = \"t\"\n",
        std::path::Path::new("/tmp/dirbridge.toml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let client =
        super::client::ScimClient::new(&cfg.target, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    let url = |id: &str| client.url("Users", Some(id)).map(|u| u.to_string());
    assert_eq!(
        url("a/b %c").ok().as_deref(),
        Some("http://127.0.0.1:8080/scim/v2/Users/a%2Fb%20%25c")
    );
    for id in ["a\tb", "a\nb", "ab\r", ".", "..", ""] {
        let e = url(id).err().unwrap_or_else(|| panic!("{id:?} was named"));
        assert!(e.to_string().contains("cannot be named in a URL"), "{e}");
    }
    // Dots inside an id are only characters.
    assert_eq!(
        url("...").ok().as_deref(),
        Some("http://127.0.0.1:8080/scim/v2/Users/...")
    );
}
