//! How a command ends, and the exit code that says so: the ground floor every other floor
//! may import (commands return [`Done`], any floor may raise a [`UsageError`]).

use crate::core::spec::SpecError;

/// Input the user must fix (exit code 2), other than a spec error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);

/// How a command ended without an error of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Done {
    /// Everything it was asked to do is done.
    Ok,
    /// It finished, but this many images failed (exit code 1).
    Failed(usize),
}

impl Done {
    /// `Ok` when nothing failed, else `Failed(failed)`.
    pub(crate) fn with_failures(failed: usize) -> Done {
        if failed == 0 { Done::Ok } else { Done::Failed(failed) }
    }
}

/// The exit code of a command's result: 0 done, 1 some image failed or I/O failed, 2 unusable
/// input (a spec error or a [`UsageError`]).
pub(crate) fn exit_code(result: &anyhow::Result<Done>) -> u8 {
    match result {
        Ok(Done::Ok) => 0,
        Ok(Done::Failed(_)) => 1,
        Err(e) if e.downcast_ref::<SpecError>().is_some() || e.downcast_ref::<UsageError>().is_some() => 2,
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&Ok(Done::Ok)), 0);
        assert_eq!(exit_code(&Ok(Done::Failed(3))), 1);
        assert_eq!(exit_code(&Err(UsageError("x".into()).into())), 2);
        assert_eq!(exit_code(&Err(anyhow::anyhow!("io"))), 1);
        assert_eq!(exit_code(&Err(anyhow::Error::from(UsageError("x".into())).context("while y"))), 2);
        assert_eq!(Done::with_failures(0), Done::Ok);
        assert_eq!(Done::with_failures(2), Done::Failed(2));
    }
}
