//! The target as the service sends to it with `[ha]`: every write first asks the fence whether
//! this gateway still holds the lease, so that nothing is sent once it may have passed to
//! another gateway (a pass in progress is also abandoned then; this catches the requests
//! between the deadline and that).

use std::sync::Arc;

use super::ha::Fence;
use crate::model::{FieldChange, Key, User};
use crate::target::{
    quirks, Declared, RemoteGroup, RemoteUser, Target, TargetError, TargetErrorKind,
};

pub(crate) struct Fenced<'a, T> {
    inner: &'a T,
    fence: Arc<Fence>,
}

impl<'a, T: Target> Fenced<'a, T> {
    pub(crate) fn new(inner: &'a T, fence: Arc<Fence>) -> Self {
        Fenced { inner, fence }
    }

    /// A write, sent only while the fence is open and cut off (its request dropped, its
    /// retries with it) when the fence closes: nothing of it leaves this gateway after the
    /// deadline. A request already on its way may still be carried out: the error says so
    /// (`Lost`: the object is looked up before anything is sent for it again).
    async fn write<R>(
        &self,
        request: &str,
        send: impl std::future::Future<Output = Result<R, TargetError>>,
    ) -> Result<R, TargetError> {
        self.check(request)?;
        let Some(deadline) = self.fence.deadline() else {
            return send.await;
        };
        match tokio::time::timeout_at(deadline, send).await {
            Ok(r) => r,
            Err(_) => Err(TargetError {
                request: request.to_string(),
                kind: TargetErrorKind::Lost(
                    "cut off when this gateway's hold on the HA lease ended".into(),
                ),
            }),
        }
    }

    fn check(&self, request: &str) -> Result<(), TargetError> {
        if self.fence.open() {
            return Ok(());
        }
        Err(TargetError {
            request: request.to_string(),
            kind: TargetErrorKind::Config(
                "not sent: this gateway does not hold the HA lease now (another may push): nothing more is sent until it holds it again".into(),
            ),
        })
    }
}

impl<T: Target> Target for Fenced<'_, T> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn preflight(&self) -> Result<(), TargetError> {
        self.inner.preflight().await
    }
    async fn reachable(&self) -> bool {
        self.inner.reachable().await
    }
    async fn begin_pass(&self) {
        self.inner.begin_pass().await
    }
    async fn expect_creates(&self, users: usize, groups: usize) -> Result<(), TargetError> {
        self.inner.expect_creates(users, groups).await
    }
    fn user_surely_free(&self, user_name: &str) -> bool {
        self.inner.user_surely_free(user_name)
    }
    fn group_surely_free(&self, display_name: &str) -> bool {
        self.inner.group_surely_free(display_name)
    }
    fn holds_groups(&self) -> bool {
        self.inner.holds_groups()
    }
    fn can_list(&self) -> bool {
        self.inner.can_list()
    }
    fn declared(&self) -> Declared {
        self.inner.declared()
    }
    fn unsent_required(&self, sample: &User) -> Vec<String> {
        self.inner.unsent_required(sample)
    }
    fn quirks(&self) -> Vec<quirks::Quirk> {
        self.inner.quirks()
    }
    fn remember_quirks(&self, quirks: &[quirks::Quirk]) {
        self.inner.remember_quirks(quirks)
    }
    fn fit_user(&self, user: &mut User) {
        self.inner.fit_user(user)
    }
    fn fit_state(&self) -> u64 {
        self.inner.fit_state()
    }
    async fn find_user(&self, user_name: &str) -> Result<Option<RemoteUser>, TargetError> {
        self.inner.find_user(user_name).await
    }
    async fn find_user_by_key(&self, key: &Key) -> Result<Option<RemoteUser>, TargetError> {
        self.inner.find_user_by_key(key).await
    }
    async fn find_group_by_key(&self, key: &Key) -> Result<Option<RemoteGroup>, TargetError> {
        self.inner.find_group_by_key(key).await
    }
    async fn create_user(
        &self,
        key: &Key,
        user: &User,
        manager_id: Option<&str>,
    ) -> Result<String, TargetError> {
        self.write("create user", self.inner.create_user(key, user, manager_id))
            .await
    }
    async fn update_user(
        &self,
        id: &str,
        changes: &[FieldChange],
        before: &User,
        user: &User,
        manager_id: Option<&str>,
    ) -> Result<(), TargetError> {
        self.write(
            "update user",
            self.inner
                .update_user(id, changes, before, user, manager_id),
        )
        .await
    }
    async fn deactivate_user(&self, id: &str) -> Result<(), TargetError> {
        self.write("deactivate user", self.inner.deactivate_user(id))
            .await
    }
    async fn delete_user(&self, id: &str) -> Result<(), TargetError> {
        self.write("delete user", self.inner.delete_user(id)).await
    }
    async fn find_group(&self, display_name: &str) -> Result<Option<RemoteGroup>, TargetError> {
        self.inner.find_group(display_name).await
    }
    async fn create_group(&self, key: &Key, display_name: &str) -> Result<String, TargetError> {
        self.write("create group", self.inner.create_group(key, display_name))
            .await
    }
    async fn rename_group(&self, id: &str, display_name: &str) -> Result<(), TargetError> {
        self.write("rename group", self.inner.rename_group(id, display_name))
            .await
    }
    async fn add_members(&self, id: &str, member_ids: &[String]) -> Result<(), TargetError> {
        self.write("add members", self.inner.add_members(id, member_ids))
            .await
    }
    async fn remove_members(&self, id: &str, member_ids: &[String]) -> Result<(), TargetError> {
        self.write("remove members", self.inner.remove_members(id, member_ids))
            .await
    }
    async fn delete_group(&self, id: &str) -> Result<(), TargetError> {
        self.write("delete group", self.inner.delete_group(id))
            .await
    }
    async fn list_users(&self) -> Result<Vec<RemoteUser>, TargetError> {
        self.inner.list_users().await
    }
    async fn list_groups(&self) -> Result<Vec<RemoteGroup>, TargetError> {
        self.inner.list_groups().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::Key;

    /// A target whose writes never get an answer (a request held somewhere on its way).
    struct Hanging;

    impl Target for Hanging {
        fn describe(&self) -> String {
            "hanging".into()
        }
        async fn preflight(&self) -> Result<(), TargetError> {
            Ok(())
        }
        async fn find_user(&self, _: &str) -> Result<Option<RemoteUser>, TargetError> {
            Ok(None)
        }
        async fn find_user_by_key(&self, _: &Key) -> Result<Option<RemoteUser>, TargetError> {
            Ok(None)
        }
        async fn find_group_by_key(&self, _: &Key) -> Result<Option<RemoteGroup>, TargetError> {
            Ok(None)
        }
        async fn create_user(
            &self,
            _: &Key,
            _: &User,
            _: Option<&str>,
        ) -> Result<String, TargetError> {
            std::future::pending().await
        }
        async fn update_user(
            &self,
            _: &str,
            _: &[FieldChange],
            _: &User,
            _: &User,
            _: Option<&str>,
        ) -> Result<(), TargetError> {
            std::future::pending().await
        }
        async fn deactivate_user(&self, _: &str) -> Result<(), TargetError> {
            Ok(())
        }
        async fn delete_user(&self, _: &str) -> Result<(), TargetError> {
            Ok(())
        }
        async fn find_group(&self, _: &str) -> Result<Option<RemoteGroup>, TargetError> {
            Ok(None)
        }
        async fn create_group(&self, _: &Key, _: &str) -> Result<String, TargetError> {
            Ok("g".into())
        }
        async fn rename_group(&self, _: &str, _: &str) -> Result<(), TargetError> {
            Ok(())
        }
        async fn add_members(&self, _: &str, _: &[String]) -> Result<(), TargetError> {
            Ok(())
        }
        async fn remove_members(&self, _: &str, _: &[String]) -> Result<(), TargetError> {
            Ok(())
        }
        async fn delete_group(&self, _: &str) -> Result<(), TargetError> {
            Ok(())
        }
        async fn list_users(&self) -> Result<Vec<RemoteUser>, TargetError> {
            Ok(Vec::new())
        }
        async fn list_groups(&self) -> Result<Vec<RemoteGroup>, TargetError> {
            Ok(Vec::new())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_in_flight_is_cut_off_at_the_deadline_and_none_starts_after_it() {
        let fenced = Fenced::new(&Hanging, Fence::open_for(Duration::from_secs(2)));
        let started = tokio::time::Instant::now();
        let e = fenced
            .create_user(&Key::from("k"), &User::default(), None)
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(e.is_lost(), "{e}");
        // After it, nothing is even tried: the run stops (a fatal error).
        let e = fenced.deactivate_user("id").await.unwrap_err();
        assert!(e.is_fatal() && !e.is_lost(), "{e}");
        assert!(e.to_string().contains("does not hold the HA lease"), "{e}");
        // A read goes on: it changes nothing.
        assert!(fenced.find_user("x").await.unwrap().is_none());
    }
}
