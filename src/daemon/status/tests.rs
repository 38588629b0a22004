use super::*;

#[test]
fn hostile_values_cannot_break_out_of_the_page_or_a_label() {
    assert_eq!(
        html_escape("<script>alert('x')</script>&\""),
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
    );
    // A target URL with a quote, a backslash and a line break stays one label value.
    let text = metrics::render(
        &metrics::Counted::default(),
        metrics::Moment {
            target: Some("a\"b\\c\nd".into()),
            ..Default::default()
        },
    );
    assert!(
        text.contains("dirbridge_target_info{url=\"a\\\"b\\\\c\\nd\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_come_from_the_passes_not_from_a_read_of_the_store() {
    use crate::model::User;
    use crate::state::records::{Origin, StateChange, UserRecord};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store =
        Arc::new(Store::open(&dir.path().join("state"), 1 << 20).unwrap_or_else(|e| panic!("{e}")));
    let put = |k: &str| {
        let user = User {
            user_name: k.into(),
            active: true,
            ..Default::default()
        };
        StateChange::PutUser(
            k.into(),
            UserRecord::new(format!("id-{k}"), Origin::Created, user),
        )
    };
    store
        .commit(&[put("a")], None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let board = Board::new(store.clone(), Duration::from_secs(60));
    let active = |b: &Board| {
        b.metrics()
            .lines()
            .find(|l| l.starts_with("dirbridge_objects{kind=\"user\",state=\"active\"}"))
            .map(str::to_string)
    };
    assert_eq!(
        active(&board).as_deref(),
        Some("dirbridge_objects{kind=\"user\",state=\"active\"} 1")
    );
    // Written behind the board's back: a scrape does not read the store, so it does not see it.
    store
        .commit(&[put("b"), put("c")], None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(board.metrics().contains("state=\"active\"} 1\n"));
    // A pass reports the records it ended with.
    let summary = Summary {
        census: Some(Census {
            users: 3,
            users_active: 3,
            ..Default::default()
        }),
        ..Default::default()
    };
    board.record(RunKind::Sync, &Ok(RunReport { run: 1, summary }));
    assert_eq!(
        active(&board).as_deref(),
        Some("dirbridge_objects{kind=\"user\",state=\"active\"} 3")
    );
    assert!(board
        .metrics()
        .contains("dirbridge_last_success_timestamp_seconds "));
}
