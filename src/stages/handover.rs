//! Handing the plan over: the `plan` job writes it to a file (`--plan-file`), and each
//! matrix job reads it back (`--plan`) instead of asking the registry about the whole spec,
//! after checking that its own checkout would plan the same images.

use std::path::Path;

use crate::core::plan::Plan;
use crate::outcome::UsageError;
use crate::stages::emit::write_json;
use crate::stages::prepare::Prepared;

/// Reads a plan file without judging where it came from (`report` only reads statuses).
pub(crate) fn read_plan(path: &Path) -> anyhow::Result<Plan> {
    let file = std::fs::File::open(path).map_err(|e| {
        UsageError(format!("reading the plan `{}`: {e} (pass the file `split-build plan --plan-file` wrote)", path.display()))
    })?;
    serde_json::from_reader(std::io::BufReader::new(file))
        .map_err(|e| UsageError(format!("`{}` is not a split-build plan: {e}", path.display())).into())
}

/// Reads a plan file and checks that it was made from the inputs this job has: the same
/// spec, bases' local inputs, builder version and split-build. A plan from other inputs
/// would name other tags than this job computes; it is refused, saying what differs.
pub(crate) fn load_plan(path: &Path, prepared: &Prepared) -> anyhow::Result<Plan> {
    let plan = read_plan(path)?;
    let made_from = plan.made_from.as_ref().ok_or_else(|| {
        UsageError(format!(
            "the plan `{}` does not say what it was made from: make it again with `split-build plan --plan-file`",
            path.display()
        ))
    })?;
    let differences = made_from.differences(&prepared.fingerprint);
    if !differences.is_empty() {
        return Err(UsageError(format!(
            "the plan `{}` was made from other inputs than this checkout: {}; run this job on the commit the plan job ran on, or plan again",
            path.display(),
            differences.join("; ")
        ))
        .into());
    }
    Ok(plan)
}

/// Writes the plan to `path` as compact JSON, streamed.
pub(crate) fn write_plan(path: &Path, plan: &Plan) -> anyhow::Result<()> {
    write_json(path, plan, false, "plan")
}
