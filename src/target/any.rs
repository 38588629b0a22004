//! The configured target: the one place where `target.kind` becomes a client. The engine and the
//! daemon are generic over [`Target`]; the command line hands them an [`AnyTarget`].

use super::quirks::Quirk;
use super::rest::RestClient;
use super::scim::ScimClient;
use super::{RemoteGroup, RemoteUser, Target, TargetError};
use crate::config::{Config, TargetKind};
use crate::model::{FieldChange, Key, User};

/// One client per `target.kind`.
#[derive(Debug)]
pub(crate) enum AnyTarget {
    Scim(ScimClient),
    Rest(RestClient),
}

impl AnyTarget {
    /// The client `cfg.target` describes (nothing is sent yet).
    pub(crate) fn from_config(cfg: &Config) -> Result<AnyTarget, String> {
        match cfg.target.kind {
            TargetKind::Scim => {
                let custom: Vec<String> =
                    cfg.mapping.custom.iter().map(|(p, _)| p.clone()).collect();
                Ok(AnyTarget::Scim(ScimClient::new(&cfg.target, custom)?))
            }
            TargetKind::Rest | TargetKind::MiniOrange => {
                Ok(AnyTarget::Rest(RestClient::new(&cfg.target)?))
            }
        }
    }
}

impl AnyTarget {
    /// The requests an operation becomes with this client, for `test-mapping`.
    pub(crate) fn render(&self, req: &crate::plan::apply::Request) -> Vec<super::Rendered> {
        match self {
            AnyTarget::Scim(_) => super::scim::preview::render(req),
            AnyTarget::Rest(t) => t.render(req),
        }
    }
}

/// Calls the same method on whichever client this is.
macro_rules! each {
    ($self:ident, $t:ident => $call:expr) => {
        match $self {
            AnyTarget::Scim($t) => $call,
            AnyTarget::Rest($t) => $call,
        }
    };
}

impl Target for AnyTarget {
    fn describe(&self) -> String {
        each!(self, t => t.describe())
    }
    async fn preflight(&self) -> Result<(), TargetError> {
        each!(self, t => t.preflight().await)
    }
    async fn reachable(&self) -> bool {
        each!(self, t => t.reachable().await)
    }
    async fn begin_pass(&self) {
        each!(self, t => t.begin_pass().await)
    }
    async fn expect_creates(&self, users: usize, groups: usize) -> Result<(), TargetError> {
        each!(self, t => t.expect_creates(users, groups).await)
    }
    fn user_surely_free(&self, user_name: &str) -> bool {
        each!(self, t => t.user_surely_free(user_name))
    }
    fn group_surely_free(&self, display_name: &str) -> bool {
        each!(self, t => t.group_surely_free(display_name))
    }
    fn holds_groups(&self) -> bool {
        each!(self, t => t.holds_groups())
    }
    fn can_list(&self) -> bool {
        each!(self, t => t.can_list())
    }
    fn declared(&self) -> super::Declared {
        each!(self, t => t.declared())
    }
    fn unsent_required(&self, sample: &User) -> Vec<String> {
        each!(self, t => t.unsent_required(sample))
    }
    fn quirks(&self) -> Vec<Quirk> {
        each!(self, t => t.quirks())
    }
    fn remember_quirks(&self, quirks: &[Quirk]) {
        each!(self, t => t.remember_quirks(quirks))
    }
    fn fit_user(&self, user: &mut User) {
        each!(self, t => t.fit_user(user))
    }
    fn fit_state(&self) -> u64 {
        each!(self, t => t.fit_state())
    }
    async fn find_user(&self, user_name: &str) -> Result<Option<RemoteUser>, TargetError> {
        each!(self, t => t.find_user(user_name).await)
    }
    async fn find_user_by_key(&self, key: &Key) -> Result<Option<RemoteUser>, TargetError> {
        each!(self, t => t.find_user_by_key(key).await)
    }
    async fn find_group_by_key(&self, key: &Key) -> Result<Option<RemoteGroup>, TargetError> {
        each!(self, t => t.find_group_by_key(key).await)
    }
    async fn create_user(
        &self,
        key: &Key,
        user: &User,
        manager_id: Option<&str>,
    ) -> Result<String, TargetError> {
        each!(self, t => t.create_user(key, user, manager_id).await)
    }
    async fn update_user(
        &self,
        id: &str,
        changes: &[FieldChange],
        before: &User,
        user: &User,
        manager_id: Option<&str>,
    ) -> Result<(), TargetError> {
        each!(self, t => t.update_user(id, changes, before, user, manager_id).await)
    }
    async fn deactivate_user(&self, id: &str) -> Result<(), TargetError> {
        each!(self, t => t.deactivate_user(id).await)
    }
    async fn delete_user(&self, id: &str) -> Result<(), TargetError> {
        each!(self, t => t.delete_user(id).await)
    }
    async fn find_group(&self, display_name: &str) -> Result<Option<RemoteGroup>, TargetError> {
        each!(self, t => t.find_group(display_name).await)
    }
    async fn create_group(&self, key: &Key, display_name: &str) -> Result<String, TargetError> {
        each!(self, t => t.create_group(key, display_name).await)
    }
    async fn rename_group(&self, id: &str, display_name: &str) -> Result<(), TargetError> {
        each!(self, t => t.rename_group(id, display_name).await)
    }
    async fn add_members(&self, id: &str, member_ids: &[String]) -> Result<(), TargetError> {
        each!(self, t => t.add_members(id, member_ids).await)
    }
    async fn remove_members(&self, id: &str, member_ids: &[String]) -> Result<(), TargetError> {
        each!(self, t => t.remove_members(id, member_ids).await)
    }
    async fn delete_group(&self, id: &str) -> Result<(), TargetError> {
        each!(self, t => t.delete_group(id).await)
    }
    async fn list_users(&self) -> Result<Vec<RemoteUser>, TargetError> {
        each!(self, t => t.list_users().await)
    }
    async fn list_groups(&self) -> Result<Vec<RemoteGroup>, TargetError> {
        each!(self, t => t.list_groups().await)
    }
}

/// Passes are `Send`: a pass with the configured target can run on any task of the runtime
/// (checked when this compiles; nothing runs).
#[allow(dead_code)]
fn passes_are_send(
    cfg: &'static Config,
    store: &'static crate::state::Store,
    target: &'static AnyTarget,
    feed: &'static mut crate::engine::feed::Feed,
) {
    fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}
    spawnable(crate::engine::run(
        cfg,
        store,
        target,
        crate::engine::RunKind::Resync,
    ));
    spawnable(crate::engine::run_feed(cfg, store, target, feed));
}
