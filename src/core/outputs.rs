//! The action's outputs (`$GITHUB_OUTPUT`) of each command, as name/value pairs in the order
//! action.yml lists them.

use crate::core::plan::Plan;

/// The `plan` outputs: the three matrices, the counts a workflow gates on, the builder image
/// and the whole plan.
pub fn plan_outputs(plan: &Plan) -> serde_json::Result<Vec<(&'static str, String)>> {
    let c = plan.counts();
    Ok(vec![
        ("builder-matrix", serde_json::to_string(&plan.matrices.builder)?),
        ("bases-matrix", serde_json::to_string(&plan.matrices.bases)?),
        ("agents-matrix", serde_json::to_string(&plan.matrices.agents)?),
        ("builder-needed", c.builder_needed.to_string()),
        ("bases-missing", c.bases_missing.to_string()),
        ("agents-missing", c.agents_missing.to_string()),
        ("cache-hits", c.cache_hits.to_string()),
        ("builder-image", plan.builder.image.to_string()),
        ("plan", serde_json::to_string(plan)?),
    ])
}
