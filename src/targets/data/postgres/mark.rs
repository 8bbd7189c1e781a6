//! Marks of ownership (comments on roles, schemas and databases) and whether an object is there.

use sqlx::PgConnection;

use crate::targets::provider::ProviderError;

pub(super) async fn schema_exists(
    conn: &mut PgConnection,
    name: &str,
) -> Result<bool, ProviderError> {
    let (exists,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(name)
            .fetch_one(conn)
            .await
            .map_err(ProviderError::sql("look for the schema"))?;
    Ok(exists)
}

/// The objects a mark of ownership is a comment on.
#[derive(Clone, Copy)]
pub(super) enum Marked {
    Role,
    Schema,
    Database,
}

/// An object's comment: `None` when there is no such object, `Some(None)` when it has none.
pub(super) async fn comment(
    conn: &mut PgConnection,
    object: Marked,
    name: &str,
) -> Result<Option<Option<String>>, ProviderError> {
    let (sql, context) = match object {
        Marked::Role => (
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
            "look for the role",
        ),
        Marked::Schema => (
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1",
            "look for the schema",
        ),
        Marked::Database => (
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            "look for the database",
        ),
    };
    sqlx::query_as::<_, (Option<String>,)>(sql)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map(|row| row.map(|(c,)| c))
        .map_err(ProviderError::sql(context))
}

pub(super) async fn role_exists(
    conn: &mut PgConnection,
    name: &str,
) -> Result<bool, ProviderError> {
    let (exists,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(name)
            .fetch_one(&mut *conn)
            .await
            .map_err(ProviderError::sql("look for the role"))?;
    Ok(exists)
}
