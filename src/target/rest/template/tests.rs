use serde_json::json;

use super::*;

/// Values an attacker controls in the directory (a userName, a title).
const HOSTILE: &[&str] = &[
    "o'brien \"the\" {x}",
    "a&b=c",
    "../../admin",
    "x/y?z#w",
    "line\r\nX-Injected: 1",
    "{{userName}}",
    "percent %41 %",
    "emoji 🧑‍💻 ünï",
    "plus+space here",
    "back\\slash\u{0}nul",
];

fn vars(user_name: &str) -> Vars {
    let mut v = Vars::default();
    v.set("userName", user_name)
        .set("active", false)
        .set("id", "42")
        .set("members", json!(["u1", "u 2"]));
    v
}

#[test]
fn a_whole_placeholder_keeps_its_type_and_a_partial_one_is_text() {
    let t = json!({
        "user": "{userName}",
        "enabled": "{active}",
        "groups": "{members}",
        "label": "user {userName} ({id})",
        "fixed": 3,
        "missing": "{title}",
        "nested": { "members": [ { "value": "{member}" } ] },
        "literal": "{{not a value}}",
        "seed": "@ExternalUserId",
    });
    let out = body(&t, &vars("ann"), Missing::Omit).unwrap();
    assert_eq!(
        out,
        json!({
            "user": "ann",
            "enabled": false,
            "groups": ["u1", "u 2"],
            "label": "user ann (42)",
            "fixed": 3,
            "nested": { "members": [ { "value": "u1" }, { "value": "u 2" } ] },
            "literal": "{not a value}",
            "seed": "42",
        })
    );
    let out = body(&t, &vars("ann"), Missing::Null).unwrap();
    assert_eq!(out["missing"], Value::Null);
    assert!(out.as_object().unwrap().contains_key("missing"));
}

#[test]
fn hostile_values_stay_values_in_json_form_url_and_headers() {
    for h in HOSTILE {
        let v = vars(h);
        // JSON: the value comes back byte-exact, whatever it holds.
        let out = body(
            &json!({"u": "{userName}", "s": "x{userName}y"}),
            &v,
            Missing::Omit,
        )
        .unwrap();
        let text = serde_json::to_string(&out).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["u"], json!(h));
        assert_eq!(back["s"], json!(format!("x{h}y")));

        // Form: one pair, decoded to the value.
        let f = form(&json!({"u": h, "n": 1})).unwrap();
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(f.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(
            pairs,
            vec![("n".into(), "1".into()), ("u".into(), h.to_string())]
        );

        // URL: the path and query stay as templated; the value decodes back.
        match url_path("/users/{userName}?q={userName}&x=1", &v) {
            Ok(p) => {
                let u = url::Url::parse(&format!("http://h/api{p}")).unwrap();
                let segs: Vec<_> = u.path_segments().unwrap().collect();
                assert_eq!(segs.len(), 3, "{h}: {p}");
                let seg = percent_encoding::percent_decode_str(segs[2])
                    .decode_utf8()
                    .unwrap();
                assert_eq!(seg, *h);
                let q: Vec<(String, String)> = u.query_pairs().into_owned().collect();
                assert_eq!(
                    q,
                    vec![("q".into(), h.to_string()), ("x".into(), "1".into())]
                );
                assert!(u.fragment().is_none());
            }
            Err(e) => panic!("{h}: {e}"),
        }

        // Header: a line break is refused, anything else passes as one value.
        let hv = header_value("Name {userName}", &v);
        if h.chars().any(char::is_control) {
            assert!(hv.is_err(), "{h}");
        } else {
            assert_eq!(hv.unwrap(), Some(format!("Name {h}")));
        }
        // As JSON text inside a query (json-server's `_where`), still one value.
        let p = url_path("/u?w={{\"n\":{userName|json}}}", &v).unwrap();
        let u = url::Url::parse(&format!("http://h{p}")).unwrap();
        let (_, w) = u.query_pairs().next().unwrap();
        let doc: Value = serde_json::from_str(&w).unwrap();
        assert_eq!(doc["n"], json!(h));
    }
}

#[test]
fn a_url_refuses_missing_values_and_dot_segments() {
    let v = vars("..");
    assert!(url_path("/users/{userName}", &v).is_err());
    assert!(url_path("/users/{userName}/x", &v).is_err());
    // In a query a dot is just a value.
    assert_eq!(url_path("/users?u={userName}", &v).unwrap(), "/users?u=..");
    let e = url_path("/users/{title}", &v).unwrap_err();
    assert!(e.contains("{title}"), "{e}");
    let mut empty = Vars::default();
    empty.set("id", "");
    assert!(url_path("/users/{id}", &empty).is_err());
    assert_eq!(
        url_path("/users?page={id}", &empty).unwrap(),
        "/users?page="
    );
}

#[test]
fn templates_that_cannot_be_read_are_refused() {
    assert!(parse("/users/{id").is_err());
    assert!(parse("/users/id}").is_err());
    assert!(parse("/users/{}").is_err());
    assert_eq!(
        names("/u/{ id }?x={{y}}&z=@ExternalUserId").unwrap(),
        vec!["id".to_string(), "id".to_string()]
    );
}

#[test]
fn form_bodies_repeat_list_keys_and_leave_out_nulls() {
    let f = form(&json!({"a": ["x", "y"], "b": null, "c": true})).unwrap();
    assert_eq!(f, "a=x&a=y&c=true");
    assert!(form(&json!({"a": {"b": 1}})).is_err());
    assert!(form(&json!(["a"])).is_err());
}

#[test]
fn paths_read_nested_values_and_map_over_arrays() {
    let doc = json!({"users": {"data": [{"id": 7, "name": {"given": "Ann"}}]},
                     "members": [{"value": "a"}, {"value": "b"}, {"other": 1}]});
    assert_eq!(lookup(&doc, "users.data.0.id"), Some(json!(7)));
    assert_eq!(lookup(&doc, "users.data.0.name.given"), Some(json!("Ann")));
    assert_eq!(lookup(&doc, "members.*.value"), Some(json!(["a", "b"])));
    assert_eq!(lookup(&doc, "nope.x"), None);
    assert_eq!(lookup(&doc, ""), Some(doc.clone()));
}

#[test]
fn placements_read_a_create_body_back() {
    let t = json!({
        "userName": "{userName}",
        "name": {"given": "{givenName}", "full": "{givenName} {familyName}"},
        "members": [{"value": "{member}"}],
        "ids": "{members}",
    });
    let p = placements(&t);
    assert_eq!(
        placements(&json!({"emails": [{"value": "{email}"}]}))["email"],
        "emails.0.value"
    );
    assert_eq!(p["userName"], "userName");
    assert_eq!(p["givenName"], "name.given");
    assert!(!p.contains_key("familyName"));
    assert_eq!(p["members"], "ids");
}

#[test]
fn a_header_without_its_value_is_left_out_and_modifiers_are_checked() {
    let v = vars("ann");
    assert_eq!(header_value("{title}", &v).unwrap(), None);
    assert_eq!(header_value("x {title}", &v).unwrap(), Some("x ".into()));
    assert_eq!(
        names("{userName|json}").unwrap(),
        vec!["userName".to_string()]
    );
    assert!(names("{userName|sql}").is_err());
    assert_eq!(
        body(&json!({"q": "{userName|json}"}), &v, Missing::Omit).unwrap(),
        json!({"q": "\"ann\""})
    );
}
