//! Sections of BENCHMARKS.md between HTML-comment markers, so one can be re-measured (or kept
//! by a run that does not measure it) without touching the rest of the report.

use std::path::Path;

/// The start and end markers of a section.
pub struct Markers {
    pub start: &'static str,
    pub end: &'static str,
}

impl Markers {
    /// The section of an existing report (markers included), so a run that does not re-measure
    /// it keeps it.
    pub fn existing(&self, out: &Path) -> Option<String> {
        let old = std::fs::read_to_string(out).ok()?;
        let (a, b) = (old.find(self.start)?, old.find(self.end)?);
        (b > a).then(|| format!("\n{}\n", &old[a..b + self.end.len()]))
    }

    /// `old` with its section replaced by `section`, or with `section` appended.
    pub fn replace(&self, old: &str, section: &str) -> String {
        let section = section.trim_matches('\n');
        let (before, after) = match (old.find(self.start), old.find(self.end)) {
            (Some(a), Some(b)) if b > a => (&old[..a], &old[b + self.end.len()..]),
            _ => (old, ""),
        };
        let (before, after) = (
            before.trim_end_matches('\n'),
            after.trim_start_matches('\n'),
        );
        let mut text = String::new();
        if !before.is_empty() {
            text.push_str(before);
            text.push_str("\n\n");
        }
        text.push_str(section);
        text.push('\n');
        if !after.is_empty() {
            text.push('\n');
            text.push_str(after);
        }
        text
    }
}
