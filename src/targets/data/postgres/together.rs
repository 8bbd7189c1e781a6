//! A new schema-mode tenant's role, schema (its migrations and grants with it) and seed,
//! made in one transaction: one commit, one step and one checkpoint of the tenant's, where
//! on their own they were three steps, three checkpoints and seven transactions.
//! PostgreSQL's DDL is transactional, so a run killed half-way leaves none of them, and the
//! rerun makes them all. A database slice is never among them: CREATE DATABASE runs in no
//! transaction.

use crate::model::attrs::Attrs;
use crate::model::change::{Action, ResourceChange};
use crate::model::resource::Kind;
use crate::model::tenant::{Effective, Isolation};
use crate::targets::provider::{
    desired_of, seed_rows_of, unmanaged, wanted_migrations, Provider, ProviderError, StepContext,
    TogetherFailed,
};

use super::{mark::role_found, migrate::seed_rows, role_lock, seed_lock, PgData};
use crate::clients::postgres::advisory_xact_locks;

/// Whether `next` goes in one transaction with `first` and the changes between them: a new
/// schema-mode tenant's role first, then its schema and its seed.
pub(super) fn joins(tenant: &Effective, first: &ResourceChange, next: &ResourceChange) -> bool {
    let new = |c: &ResourceChange| {
        c.action == Action::Create && c.desired.is_some() && c.purged().is_none()
    };
    tenant.isolation == Isolation::Schema
        && first.key.kind == Kind::ROLE
        && matches!(next.key.kind, Kind::DATABASE | Kind::SEED)
        && new(first)
        && new(next)
}

impl PgData {
    /// One attempt at the changes [`joins`] put together.
    pub(super) async fn together_once(
        &self,
        ctx: &StepContext<'_>,
        changes: &[ResourceChange],
    ) -> Result<Vec<Attrs>, TogetherFailed> {
        let failed = |at: usize| move |error: ProviderError| TogetherFailed { at, error };
        let slug = &ctx.tenant.slug;
        let slice = self.slice(slug, Isolation::Schema);
        let role = self.naming.role(slug);
        // A role made in this transaction holds nothing beyond its slice: only what PUBLIC
        // holds is looked at.
        self.confine_new().await.map_err(failed(0))?;
        let pool = self.pool().await.map_err(failed(0))?;
        let superuser = self.superuser().await.map_err(failed(0))?;
        let mut tx = pool
            .begin()
            .await
            .map_err(ProviderError::sql("begin"))
            .map_err(failed(0))?;
        // The role's, the slice's and the seed's locks, in one statement.
        let locks = [role_lock(&role), slice.lock(), seed_lock(slug)];
        let found = async {
            advisory_xact_locks(tx.as_mut(), &locks).await?;
            role_found(tx.as_mut(), &role, superuser).await
        };
        if found.await.map_err(failed(0))?.is_some() {
            // There already (made by a run killed before it recorded it, or by someone
            // else): each change on its own, which looks at such a role whole.
            drop(tx);
            return self.one_by_one(ctx, changes).await;
        }
        let mut made = Vec::with_capacity(changes.len());
        for (at, change) in changes.iter().enumerate() {
            let attrs = async {
                let desired = desired_of(change)?;
                match change.key.kind {
                    Kind::ROLE => {
                        self.role_in(tx.as_mut(), ctx, change, &desired.attrs, None)
                            .await
                    }
                    Kind::DATABASE => {
                        let fresh = self.schema_in(tx.as_mut(), ctx, change, &slice).await?;
                        let wanted = wanted_migrations(&self.migrations, &desired.attrs);
                        self.migrate_in(tx.as_mut(), &slice, wanted, fresh).await?;
                        self.record_slice(tx.as_mut(), slug, &slice, &role).await?;
                        Ok(self.slice_attrs(&desired.attrs, &slice, wanted))
                    }
                    Kind::SEED => {
                        let rows = seed_rows(seed_rows_of(desired)?)?;
                        self.seed_in(tx.as_mut(), ctx, &slice, &rows).await?;
                        Ok(desired.attrs.clone())
                    }
                    other => Err(unmanaged(self, other)),
                }
            }
            .await
            .map_err(failed(at))?;
            made.push(attrs);
        }
        tx.commit()
            .await
            .map_err(ProviderError::sql("commit"))
            .map_err(failed(changes.len().saturating_sub(1)))?;
        if let Some(role) = made.first() {
            self.settled(ctx, role);
        }
        Ok(made)
    }

    /// The changes one after the other, each in its own call, as when they do not join.
    async fn one_by_one(
        &self,
        ctx: &StepContext<'_>,
        changes: &[ResourceChange],
    ) -> Result<Vec<Attrs>, TogetherFailed> {
        let mut made = Vec::with_capacity(changes.len());
        for (at, change) in changes.iter().enumerate() {
            let attrs = self
                .apply(ctx, change)
                .await
                .and_then(|a| {
                    a.ok_or_else(|| ProviderError::Unplanned("a create made nothing".into()))
                })
                .map_err(|error| TogetherFailed { at, error })?;
            made.push(attrs);
        }
        Ok(made)
    }
}
