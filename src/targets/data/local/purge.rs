//! A tenant's login role and database destroyed, with the journals SQLite keeps beside it.

use std::path::PathBuf;

use async_trait::async_trait;

use crate::model::resource::{Key, Kind};
use crate::targets::provider::{unmanaged, ProviderError, Purge, StepContext};

use super::LocalData;

#[async_trait]
impl Purge for LocalData {
    /// Its purges never leave the machine.
    fn remote_per_tenant(&self) -> bool {
        false
    }

    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError> {
        let slug = &ctx.tenant.slug;
        match key.kind {
            Kind::ROLE => {
                sqlx::query("DELETE FROM roles WHERE name = ?")
                    .bind(self.naming.role(slug))
                    .execute(self.catalog().await?)
                    .await
                    .map_err(ProviderError::sql("purge the login role"))?;
            }
            Kind::DATABASE => {
                let path = self.database_path(slug);
                // The database with the journals SQLite may keep beside it.
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let file = PathBuf::from(file);
                    match std::fs::remove_file(&file) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(ProviderError::io(format!("remove {}", file.display()))(e))
                        }
                        _ => {}
                    }
                }
                sqlx::query("DELETE FROM slices WHERE slug = ?")
                    .bind(slug.as_str())
                    .execute(self.catalog().await?)
                    .await
                    .map_err(ProviderError::sql("forget the data slice"))?;
            }
            other => return Err(unmanaged(self, other)),
        }
        Ok(())
    }
}
