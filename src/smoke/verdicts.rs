//! How a target words the verdict of a check it ran: the same sentences from every target,
//! beneath the targets, apart from the run that asks them.

/// Rows counted per table of a slice, as a data target's `data` check reads them.
pub type Counted = Result<Vec<(String, u64)>, String>;

/// The `data` check's verdict on what `who` (`tenant_acme `, or nothing locally) counted:
/// a seeded tenant must find rows.
pub fn data_verdict(who: &str, counted: &Counted, seeded: bool) -> Result<String, String> {
    let counts = counted.as_ref().map_err(Clone::clone)?;
    let rows: u64 = counts.iter().map(|(_, n)| n).sum();
    if seeded && rows == 0 {
        return Err(format!(
            "{who}sees no rows in its slice, though it was seeded"
        ));
    }
    Ok(format!(
        "{who}reads {}",
        crate::targets::provider::tables_and_rows(counts.len(), rows)
    ))
}

/// The table the `write` check writes a row of (one with rows), `Ok(None)` when there is
/// none, or why it is not run.
pub fn write_target(counted: &Counted) -> Result<Option<&str>, String> {
    match counted {
        Ok(counts) => Ok(counts.iter().find(|(_, n)| *n > 0).map(|(t, _)| t.as_str())),
        Err(_) => Err("not run: the slice's tables do not read".into()),
    }
}

/// A bucket probe's verdict: whether the object read back as written, and whether its
/// delete went through.
pub fn probe_verdict(
    bucket: &str,
    read: Result<bool, String>,
    deleted: Result<(), String>,
) -> Result<String, String> {
    match (read?, deleted) {
        (true, Ok(())) => Ok(format!(
            "the bucket {bucket} took, returned and deleted a probe object"
        )),
        (false, _) => Err("the probe object read back differs".into()),
        (true, Err(e)) => Err(e),
    }
}

/// A declared sql check's answer: its first column of its first row must be true.
pub fn sql_verdict(first: Option<Option<bool>>) -> Result<String, String> {
    match first {
        Some(Some(true)) => Ok("returned true".into()),
        Some(Some(false)) => Err("returned false".into()),
        Some(None) => Err("returned NULL".into()),
        None => Err("returned no row".into()),
    }
}
