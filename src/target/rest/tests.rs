use serde_json::json;

use super::answer::{self, Judge};
use crate::config::rest::{FieldPaths, ResponseRules};
use crate::target::http::ErrorShape;
use crate::target::TargetErrorKind;

fn mini_rules() -> ResponseRules {
    ResponseRules {
        success_path: Some("status".into()),
        success_value: Some(json!("SUCCESS")),
        message_path: Some("message".into()),
        exists_statuses: vec![409],
        exists_message: Some("already exists".into()),
        not_found_message: None,
        not_found_values: vec![json!("FAILED")],
    }
}

#[test]
fn an_error_in_a_success_status_is_an_error_with_its_message() {
    let rules = mini_rules();
    let j = Judge {
        rules: &rules,
        expect: &[],
    };
    let ok = reqwest::StatusCode::OK;
    assert!(j.body_error(ok, &json!({"status": "SUCCESS"})).is_none());
    match j.body_error(
        ok,
        &json!({"status": "ERROR", "message": "User already exists with this username"}),
    ) {
        Some(TargetErrorKind::Exists {
            status: 200,
            detail,
        }) => {
            assert_eq!(
                detail.as_deref(),
                Some("User already exists with this username")
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        j.body_error(ok, &json!({"status": "FAILED"})),
        Some(TargetErrorKind::Missing { .. })
    ));
    match j.body_error(
        ok,
        &json!({"status": "ERROR", "message": "license\r\nlimit"}),
    ) {
        Some(TargetErrorKind::Http {
            status: 200,
            code,
            detail,
        }) => {
            assert_eq!(code.as_deref(), Some("ERROR"));
            assert_eq!(detail.as_deref(), Some("licenselimit"));
        }
        other => panic!("{other:?}"),
    }
    // No status at all is not a success either.
    assert!(j.body_error(ok, &json!({})).is_some());
}

#[test]
fn statuses_read_as_configured() {
    let rules = ResponseRules {
        exists_statuses: vec![409, 422],
        ..Default::default()
    };
    let j = Judge {
        rules: &rules,
        expect: &[201],
    };
    assert!(j.is_success(reqwest::StatusCode::CREATED));
    assert!(!j.is_success(reqwest::StatusCode::OK));
    let e = j.http_error(
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        br#"{"error":"taken"}"#,
    );
    assert!(
        matches!(e, TargetErrorKind::Exists { status: 422, .. }),
        "{e:?}"
    );
    let e = j.http_error(reqwest::StatusCode::NOT_FOUND, b"gone");
    assert!(
        matches!(e, TargetErrorKind::Missing { status: 404, .. }),
        "{e:?}"
    );
}

#[test]
fn a_listed_user_is_read_back_through_the_field_paths() {
    let mut paths = FieldPaths::default();
    for (k, v) in [
        ("id", "id"),
        ("userName", "login"),
        ("givenName", "name.given"),
        ("active", "state"),
        ("externalId", "ext"),
        ("costCenter", "cc"),
    ] {
        paths.paths.insert(k.into(), v.into());
    }
    let u = answer::user(
        &json!({"id": 17, "login": "ann", "name": {"given": "Ann"}, "state": "disabled", "ext": "k1", "cc": 42}),
        &paths,
        &["costCenter".to_string()],
    )
    .unwrap();
    assert_eq!(u.id, "17");
    assert_eq!(u.user.user_name, "ann");
    assert_eq!(u.user.given_name.as_deref(), Some("Ann"));
    assert!(!u.user.active);
    assert_eq!(u.external_id.as_deref(), Some("k1"));
    assert_eq!(
        u.user.custom.get("costCenter").map(String::as_str),
        Some("42")
    );
    // Without an id or a userName it cannot be matched, so it is not read.
    assert!(answer::user(&json!({"login": "ann"}), &paths, &[]).is_none());
    assert!(answer::user(&json!({"id": 1}), &paths, &[]).is_none());
}

#[test]
fn items_come_from_the_data_path_or_the_answer_itself() {
    let doc = json!({"users": {"data": [{"id": 1}]}});
    assert_eq!(answer::items(&doc, Some("users.data")).unwrap().len(), 1);
    assert!(answer::items(&doc, Some("nope")).is_err());
    assert_eq!(
        answer::items(&json!([{"a":1},{"a":2}]), None)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(answer::items(&json!({"a":1}), None).unwrap().len(), 1);
    assert!(answer::items(&json!("text"), None).is_err());
}
