//! Positions, the sink every check reports into, and the phrasing the checks share.
//!
//! This is the one place that knows how a problem becomes a `FILE:LINE:COL: message` line: how
//! positions are numbered (1-based lines and columns, columns counted in characters), how the
//! final list is ordered (file, line, column) and how recurring messages are worded ("unknown
//! key", "did you mean", "is already defined at", "not supported yet").

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;

/// One problem in the configuration, at a 1-based line and column of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

impl Diagnostic {
    /// `FILE:LINE:COL: warning: message`: how a warning (a problem that does not stop the config
    /// from serving) is printed and logged.
    pub fn warning(&self) -> String {
        format!(
            "{}:{}:{}: warning: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Index of a file in the [`Sink`]'s file table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FileId(pub(crate) u32);

/// A position in a file: 1-based line, 1-based column in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Pos {
    pub file: FileId,
    pub line: u32,
    pub col: u32,
}

impl Pos {
    /// The start of a file: where problems without a better position are reported.
    pub fn file_start(file: FileId) -> Self {
        Self {
            file,
            line: 1,
            col: 1,
        }
    }

    /// The position `chars` characters to the right on the same line.
    pub fn right(self, chars: usize) -> Self {
        let chars = u32::try_from(chars).unwrap_or(u32::MAX);
        Self {
            col: self.col.saturating_add(chars),
            ..self
        }
    }
}

/// Collects problems while a configuration is loaded; every phase reports into it and keeps
/// going, so that one run shows every problem.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    files: Vec<PathBuf>,
    found: RefCell<Vec<(Pos, String)>>,
    /// Problems that do not stop the config from serving (an expired certificate).
    warnings: RefCell<Vec<(Pos, String)>>,
}

impl Sink {
    /// Registers a file that positions may refer to.
    pub fn add_file(&mut self, path: PathBuf) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).unwrap_or(u32::MAX));
        self.files.push(path);
        id
    }

    pub fn error(&self, pos: Pos, message: impl Into<String>) {
        self.found.borrow_mut().push((pos, message.into()));
    }

    pub fn warn(&self, pos: Pos, message: impl Into<String>) {
        self.warnings.borrow_mut().push((pos, message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.found.borrow().is_empty()
    }

    /// `FILE:LINE:COL`, as diagnostics print it; for messages that point at another place.
    pub fn locate(&self, pos: Pos) -> String {
        format!("{}:{}:{}", self.path(pos.file).display(), pos.line, pos.col)
    }

    /// The path of a file positions refer to.
    pub fn path(&self, file: FileId) -> PathBuf {
        self.files.get(file.0 as usize).cloned().unwrap_or_default()
    }

    /// The problems found, sorted by file, line and column (then in the order they were
    /// found), without repeats.
    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        let found = std::mem::take(&mut *self.found.borrow_mut());
        self.sorted(found)
    }

    /// The warnings, in the same order as problems.
    pub fn warnings(&self) -> Vec<Diagnostic> {
        let found = self.warnings.borrow().clone();
        self.sorted(found)
    }

    fn sorted(&self, found: Vec<(Pos, String)>) -> Vec<Diagnostic> {
        let mut out: Vec<Diagnostic> = found
            .into_iter()
            .map(|(pos, message)| Diagnostic {
                file: self.path(pos.file),
                line: pos.line as usize,
                col: pos.col as usize,
                message,
            })
            .collect();
        out.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
        out.dedup();
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Shared phrasing

/// `` `a`, `b` or `c` ``.
pub(crate) fn one_of(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("`{s}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// The candidate closest to `word` if it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `"; did you mean `x`?"` or nothing.
pub(crate) fn suggestion(word: &str, candidates: &[&str]) -> String {
    did_you_mean(word, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

pub(crate) fn unknown_key(key: &str, fields: &[&str]) -> String {
    match did_you_mean(key, fields) {
        Some(c) => format!("unknown key `{key}`; did you mean `{c}`?"),
        None => format!("unknown key `{key}` (expected {})", one_of(fields)),
    }
}

pub(crate) fn unknown_value(value: &str, expected: &[&str]) -> String {
    format!(
        "unknown value `{value}`: expected {}{}",
        one_of(expected),
        suggestion(value, expected)
    )
}

/// "route `orders` is already defined at other.yaml:12:5".
pub(crate) fn already_defined(sink: &Sink, what: &str, name: &str, first: Pos) -> String {
    format!(
        "{what} `{name}` is already defined at {}",
        sink.locate(first)
    )
}

pub(crate) fn missing_key(key: &str) -> String {
    format!("missing required key `{key}`")
}

/// For keys of which at most one may be given.
pub(crate) fn exclusive(key: &str, others: &[&str]) -> String {
    format!("`{key}` cannot be combined with {}", one_of(others))
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_file_line_col_message() {
        let d = Diagnostic {
            file: PathBuf::from("gw.yaml"),
            line: 3,
            col: 7,
            message: "boom".into(),
        };
        assert_eq!(d.to_string(), "gw.yaml:3:7: boom");
    }

    #[test]
    fn diagnostics_are_sorted_by_file_line_col_and_deduplicated() {
        let mut sink = Sink::default();
        let b = sink.add_file("b.yaml".into());
        let a = sink.add_file("a.yaml".into());
        let at = |file, line, col| Pos { file, line, col };
        sink.error(at(b, 1, 1), "b11");
        sink.error(at(a, 2, 5), "a25");
        sink.error(at(a, 2, 1), "a21");
        sink.error(at(a, 10, 1), "a101");
        sink.error(at(a, 2, 1), "a21");
        let got: Vec<String> = sink
            .into_diagnostics()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "a.yaml:2:1: a21",
                "a.yaml:2:5: a25",
                "a.yaml:10:1: a101",
                "b.yaml:1:1: b11"
            ]
        );
    }

    #[test]
    fn suggestions_only_for_close_words() {
        let fields = ["name", "address", "http2", "methods"];
        assert_eq!(did_you_mean("method", &fields), Some("methods"));
        assert_eq!(did_you_mean("adress", &fields), Some("address"));
        assert_eq!(did_you_mean("colour", &fields), None);
        assert_eq!(
            unknown_key("colour", &["a", "b", "c"]),
            "unknown key `colour` (expected `a`, `b` or `c`)"
        );
        assert_eq!(
            unknown_value("roundrobin", &["round_robin", "random"]),
            "unknown value `roundrobin`: expected `round_robin` or `random`; did you mean `round_robin`?"
        );
    }

    #[test]
    fn locate_and_already_defined() {
        let mut sink = Sink::default();
        let f = sink.add_file("conf/other.yaml".into());
        let pos = Pos {
            file: f,
            line: 12,
            col: 5,
        };
        assert_eq!(
            already_defined(&sink, "route", "orders", pos),
            "route `orders` is already defined at conf/other.yaml:12:5"
        );
    }
}
