//! A plan's notes grouped by cause: five thousand notes that say one thing of five thousand
//! upstreams are one note with a count and a few of the names.

use std::collections::BTreeMap;

use crate::core::cause::{cause_of, quoted_spans};

/// Notes that say the same thing of different names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoteGroup<'a> {
    /// The note with its names taken out (`…`), or the note itself when it stands alone.
    pub text: String,
    /// The name each note is about (its first quoted span), in the notes' order.
    pub names: Vec<&'a str>,
    /// How many notes.
    pub count: usize,
    /// The registry host every name is on, when they share one.
    pub host: Option<&'a str>,
}

/// Groups `notes` by cause, biggest group first (ties in order of first appearance).
pub(crate) fn group_notes(notes: &[String]) -> Vec<NoteGroup<'_>> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, (usize, Vec<&str>, &str)> = BTreeMap::new();
    for note in notes {
        let cause = cause_of(note, &[]);
        let e = groups.entry(cause.clone()).or_insert_with(|| {
            order.push(cause);
            (order.len(), Vec::new(), note.as_str())
        });
        if let Some(name) = quoted_spans(note).first() {
            e.1.push(name);
        }
    }
    let mut out: Vec<(usize, NoteGroup<'_>)> = order
        .into_iter()
        .filter_map(|cause| {
            let (at, names, first) = groups.remove(&cause)?;
            let count = names.len().max(1);
            let text = if count == 1 { first.to_owned() } else { cause };
            let host = shared_host(&names);
            Some((at, NoteGroup { text, names, count, host }))
        })
        .collect();
    out.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
    out.into_iter().map(|(_, g)| g).collect()
}

/// The registry host of an image name (`docker.io/x/y:1` → `docker.io`), if it names one.
fn host_of(name: &str) -> Option<&str> {
    let (head, _) = name.split_once('/')?;
    (head.contains('.') || head.contains(':') || head == "localhost").then_some(head)
}

fn shared_host<'a>(names: &[&'a str]) -> Option<&'a str> {
    let first = host_of(names.first()?)?;
    names.iter().all(|n| host_of(n) == Some(first)).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_of_one_cause_are_one_group() {
        let mut notes: Vec<String> = (0..5000)
            .map(|i| format!("upstream `docker.io/sweb/i{i}:latest`: digest not resolved (error sending request for url (https://registry-1.docker.io/v2/sweb/i0/manifests/latest)); its base hash uses the reference alone"))
            .collect();
        notes.push("cache.mode max: works as min".to_owned());
        let groups = group_notes(&notes);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].count, 5000);
        assert_eq!(groups[0].host, Some("docker.io"));
        assert_eq!(groups[0].names[..2], ["docker.io/sweb/i0:latest", "docker.io/sweb/i1:latest"]);
        assert!(
            groups[0]
                .text
                .starts_with("upstream `…`: digest not resolved (error sending request for url (https://registry-1.docker.io/…))"),
            "{}",
            groups[0].text
        );
        assert_eq!(groups[1].text, "cache.mode max: works as min");
        assert_eq!(groups[1].count, 1);
    }
}
