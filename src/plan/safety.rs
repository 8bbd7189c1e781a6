//! Guards against a plan that would act on a repo that lost most of its tenants (a wrong
//! checkout, a bad merge): such plans are refused unless explicitly allowed.

/// Errors when the files lost too many recorded tenants.
pub fn check_missing(
    recorded: usize,
    desired: usize,
    missing: usize,
    max_share: f64,
    allowed: bool,
) -> Result<(), String> {
    if allowed || recorded == 0 || missing == 0 {
        return Ok(());
    }
    if desired == 0 {
        return Err(format!(
            "the repo has no tenant files but the state records {recorded} tenants; refusing to plan\n  hint: check that this is the right checkout (-C DIR); pass --allow-missing-tenants if this is intended (orphaned tenants are never destroyed)"
        ));
    }
    let share = missing as f64 / recorded as f64;
    if missing > 1 && share > max_share {
        return Err(format!(
            "{missing} of {recorded} recorded tenants ({:.0}%) have no file any more; a plan is refused when more than one tenant file is missing and they are more than {:.0}% of the recorded tenants (safety.max_missing_share); refusing to plan\n  hint: check that this is the right checkout; pass --allow-missing-tenants if this is intended (orphaned tenants are never destroyed)",
            share * 100.0,
            max_share * 100.0
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_missing;

    #[test]
    fn one_missing_tenant_is_allowed() {
        assert!(check_missing(3, 2, 1, 0.2, false).is_ok());
    }

    #[test]
    fn an_empty_repo_is_refused_unless_allowed() {
        assert!(check_missing(3, 0, 3, 0.2, false).is_err());
        assert!(check_missing(3, 0, 3, 0.2, true).is_ok());
    }

    #[test]
    fn losing_a_large_share_is_refused() {
        assert!(check_missing(10, 7, 3, 0.2, false).is_err());
        assert!(check_missing(10, 8, 2, 0.2, false).is_ok());
    }
}
